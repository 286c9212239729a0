//! The sweep's chart, an SVG drawn with plotters: answered share against
//! the offered rate on the left, server CPU per answer on the right, a
//! line per responder. The text is SVG text the viewer's fonts draw, so
//! nothing here needs a font file.

use std::path::Path;

use anyhow::{bail, Context as _, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

/// One responder at one rate.
pub(super) struct Xy {
    /// Requests per second that left the generator.
    pub(super) offered: f64,
    pub(super) answered_pct: f64,
    pub(super) cpu_us: Option<f64>,
}

/// One responder's points, in the order of the rates.
pub(super) struct Line {
    pub(super) name: &'static str,
    pub(super) points: Vec<Xy>,
}

/// A color per line, told apart in print and by most color-blind readers.
const COLORS: [RGBColor; 4] = [
    RGBColor(0x1b, 0x9e, 0x77),
    RGBColor(0x75, 0x70, 0xb3),
    RGBColor(0xd9, 0x5f, 0x02),
    RGBColor(0xe7, 0x29, 0x8a),
];

const FONT: &str = "sans-serif";

/// Writes the chart to `path` (its directory is created).
pub(super) fn draw(path: &Path, caption: &str, lines: &[Line]) -> Result<()> {
    let xs = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.offered));
    let (lo, hi) = xs.fold((f64::MAX, 0f64), |(lo, hi), x| (lo.min(x), hi.max(x)));
    if hi <= 0.0 {
        bail!("no responder was measured at any rate: nothing to draw");
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Thousands per second, on a log axis: the rates double from point to
    // point.
    let x = (lo / 1000.0 * 0.8)..(hi / 1000.0 * 1.25);
    let cpu_max = lines
        .iter()
        .flat_map(|l| l.points.iter().filter_map(|p| p.cpu_us))
        .fold(0f64, f64::max);
    let root = SVGBackend::new(path, (1280, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(caption, (FONT, 20))?;
    let (left, right) = root.split_horizontally(640);
    panel(
        &left,
        "answered (% of sent)",
        x.clone(),
        0.0..105.0,
        lines,
        |p| Some(p.answered_pct),
        Some(SeriesLabelPosition::LowerLeft),
    )?;
    panel(
        &right,
        "server CPU per answer (µs)",
        x,
        0.0..(cpu_max * 1.15).max(1.0),
        lines,
        |p| p.cpu_us,
        // The colors are those of the left panel's legend.
        None,
    )?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Labels on the offered-rate axis: 25 doubled, the sweep's own steps.
fn ticks(x: &std::ops::Range<f64>) -> Vec<f64> {
    std::iter::successors(Some(25.0 / 64.0), |t| Some(t * 2.0))
        .take_while(|&t| t <= x.end)
        .filter(|&t| t >= x.start)
        .collect()
}

/// One panel: `y` of every line against the offered rate.
fn panel(
    area: &DrawingArea<SVGBackend, Shift>,
    y_desc: &str,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
    lines: &[Line],
    value: impl Fn(&Xy) -> Option<f64>,
    legend: Option<SeriesLabelPosition>,
) -> Result<()> {
    let mut chart = ChartBuilder::on(area)
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(x.clone().log_scale().with_key_points(ticks(&x)), y)?;
    chart
        .configure_mesh()
        .x_desc("offered STUN Binding requests (thousands per second)")
        .y_desc(y_desc)
        .x_label_formatter(&|v| format!("{v}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .draw()?;
    for (line, color) in lines.iter().zip(COLORS.iter().cycle()) {
        let mut xy: Vec<(f64, f64)> = line
            .points
            .iter()
            .filter_map(|p| value(p).map(|v| (p.offered / 1000.0, v)))
            .collect();
        // The generator's maximum differs per responder (they share its
        // CPUs) and may fall below the highest fixed rate.
        xy.sort_by(|a, b| a.0.total_cmp(&b.0));
        if xy.is_empty() {
            continue;
        }
        let color = *color;
        chart
            .draw_series(LineSeries::new(xy.iter().copied(), color.stroke_width(2)))?
            .label(line.name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(xy.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    if let Some(at) = legend {
        chart
            .configure_series_labels()
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(at)
            .draw()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{draw, Line, Xy};

    fn line(name: &'static str, shares: &[f64], cpu: Option<f64>) -> Line {
        Line {
            name,
            points: [25e3, 50e3, 100e3, 200e3, 480e3]
                .iter()
                .zip(shares)
                .map(|(&offered, &answered_pct)| Xy {
                    offered,
                    answered_pct,
                    cpu_us: cpu,
                })
                .collect(),
        }
    }

    #[test]
    fn the_chart_has_a_line_and_a_legend_entry_per_measured_responder() {
        let path = std::env::temp_dir()
            .join(format!("sip-ka-chart-{}", std::process::id()))
            .join("sweep.svg");
        let lines = [
            line(
                "first responder",
                &[100.0, 100.0, 100.0, 99.0, 98.0],
                Some(1.5),
            ),
            line("second responder", &[100.0, 90.0, 60.0, 30.0, 10.0], None),
            Line {
                name: "never measured",
                points: Vec::new(),
            },
        ];
        draw(&path, "a caption", &lines).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
        for text in ["a caption", "first responder", "second responder", "µs"] {
            assert!(svg.contains(text), "no {text:?} in the chart");
        }
        assert!(!svg.contains("never measured"));
        // Two lines on the left panel, one on the right (the second has no
        // CPU figures), and the legend's two strokes.
        // (the mesh is drawn 1 wide).
        assert_eq!(
            svg.matches(r#"stroke-width="2" points"#).count(),
            5,
            "{svg}"
        );
        // Five points per line drawn.
        assert_eq!(svg.matches("<circle").count(), 15);
    }

    #[test]
    fn a_sweep_with_no_figures_is_an_error_not_an_empty_chart() {
        let path = std::env::temp_dir().join(format!("sip-ka-empty-{}.svg", std::process::id()));
        let err = draw(&path, "c", &[line("x", &[], None)]).unwrap_err();
        assert!(err.to_string().contains("nothing to draw"), "{err:#}");
        assert!(!path.exists());
    }
}
