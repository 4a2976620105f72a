pub mod command;
pub mod protocol;
pub mod router;
