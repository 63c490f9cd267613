//! `Outlet`: the direct write path of one connection, used by fan-out.

use pyo3::gc::PyVisit;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use pyo3::PyTraverseError;

use crate::outlet::{send_now, Sent};

/// Writes pre-encoded frames straight to a connection's socket while its outbound path is idle.
///
/// The protocol that owns the transport sets `direct` to True only while nothing waits to be
/// written (no queued frame, an empty transport buffer, writing not paused) and to False as
/// soon as it queues something, so a direct write never overtakes queued bytes. `write` takes
/// a frame, or returns False, untouched, when the caller must queue it the usual way.
#[pyclass(module = "haske._rust")]
pub struct Outlet {
    transport: Py<PyAny>,
    fd: i32,
    /// Writes may bypass the protocol's queue.
    #[pyo3(get, set)]
    direct: bool,
    /// Frames written directly so far.
    #[pyo3(get)]
    written: u64,
}

impl Outlet {
    pub fn write_frame(&mut self, py: Python<'_>, frame: &Bound<'_, PyBytes>) -> PyResult<bool> {
        let data = frame.as_bytes();
        if !self.direct {
            return Ok(false);
        }
        // Once a transport is closing, its descriptor may be closed and its number reused by
        // the next connection. uvloop and asyncio close it only after connection_lost, which
        // turns the outlet off, but nothing here depends on that.
        let transport = self.transport.bind(py);
        if transport
            .call_method0(intern!(py, "is_closing"))?
            .is_truthy()?
        {
            self.direct = false;
            return Ok(false);
        }
        match send_now(self.fd, data) {
            Sent::All => {}
            Sent::Part(n) => {
                // The rest goes first in the transport's buffer; until it drains, every frame
                // takes the usual way behind it.
                self.direct = false;
                transport.call_method1(intern!(py, "write"), (PyBytes::new(py, &data[n..]),))?;
            }
            Sent::Nothing => {
                self.direct = false;
                return Ok(false);
            }
        }
        self.written += 1;
        Ok(true)
    }
}

#[pymethods]
impl Outlet {
    /// `transport` owns the socket `fd`.
    #[new]
    fn new(transport: Bound<'_, PyAny>, fd: i32) -> Self {
        Outlet {
            transport: transport.unbind(),
            fd,
            direct: false,
            written: 0,
        }
    }

    /// Writes `frame` now and returns True, or returns False without taking it.
    #[pyo3(name = "write")]
    fn py_write(&mut self, frame: &Bound<'_, PyBytes>) -> PyResult<bool> {
        self.write_frame(frame.py(), frame)
    }

    fn __repr__(&self) -> String {
        format!(
            "<Outlet fd={} direct={} written={}>",
            self.fd,
            if self.direct { "True" } else { "False" },
            self.written
        )
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.transport)
    }
}

pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<Outlet>()
}
