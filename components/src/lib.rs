//! The fbp component catalogue.
//!
//! One module per component type, grouped by family. Each module declares its
//! type in a `pub static SPEC: ComponentSpec`; [`CATALOGUE`] lists them all, and
//! that list is the only place a new component is registered.

pub mod transform;

use fbp_runtime::Catalogue;

/// Every component type fbp knows.
pub static CATALOGUE: Catalogue = Catalogue(&[&transform::map::SPEC, &transform::filter::SPEC]);
