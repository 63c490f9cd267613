//! Exceptions raised to Python.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

static HANDSHAKE_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// Imports the exception classes this module raises, so that a broken install fails at import.
pub fn load(py: Python<'_>) -> PyResult<()> {
    HANDSHAKE_ERROR.import(py, "haske.exceptions", "HandshakeError")?;
    Ok(())
}

/// `haske.exceptions.HandshakeError(status, reason)`.
pub fn handshake_error(py: Python<'_>, status: u16, reason: &str) -> PyErr {
    match HANDSHAKE_ERROR.import(py, "haske.exceptions", "HandshakeError") {
        Ok(class) => PyErr::from_type(class.clone(), (status, reason.to_owned())),
        Err(err) => err,
    }
}
