//! Configurations of other tools, read and turned into kiln profiles.

pub mod mkosi;
pub mod mkosi_ini;
mod mkosi_values;
