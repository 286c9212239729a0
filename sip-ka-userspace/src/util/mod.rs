//! Small things every layer may use and that use no other layer.

pub mod capped;
pub mod clock;
pub mod lock;
pub mod timer_wheel;
pub mod wheel;
