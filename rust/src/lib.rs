//! `haske._rust`: the native WebSocket handshake, broadcast manager and direct
//! frame writes of Haske.
//!
//! The logic lives in plain Rust modules ([`handshake`], [`manager`], [`outlet`]) that know
//! nothing of Python; the `py_*` modules are the thin PyO3 layer over them.

pub mod handshake;
pub mod manager;
pub mod outlet;
mod py_errors;
mod py_handshake;
mod py_manager;
mod py_outlet;

use pyo3::prelude::*;
use pyo3::types::PyDict;

#[pymodule]
fn _rust(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    py_errors::load(py)?;
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    let build_info = PyDict::new(py);
    build_info.set_item("pyo3", env!("HASKE_PYO3_VERSION"))?;
    build_info.set_item("rustc", env!("HASKE_RUSTC_VERSION"))?;
    build_info.set_item(
        "profile",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    )?;
    module.add("BUILD_INFO", build_info)?;
    py_handshake::register(module)?;
    py_manager::register(module)?;
    py_outlet::register(module)?;
    Ok(())
}
