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
    /// No borrow of the outlet is held while Python code runs: the transport's `write` may
    /// call the protocol's `pause_writing`, which turns the outlet off.
    pub fn write_frame(slf: &Bound<'_, Self>, frame: &Bound<'_, PyBytes>) -> PyResult<bool> {
        let py = slf.py();
        let (transport, fd) = match slf.try_borrow() {
            Ok(outlet) if outlet.direct => (outlet.transport.clone_ref(py), outlet.fd),
            _ => return Ok(false),
        };
        let transport = transport.bind(py);
        // Once a transport is closing, its descriptor may be closed and its number reused by
        // the next connection. uvloop and asyncio close it only after connection_lost, which
        // turns the outlet off, but nothing here depends on that.
        if transport
            .call_method0(intern!(py, "is_closing"))?
            .is_truthy()?
        {
            slf.try_borrow_mut()?.direct = false;
            return Ok(false);
        }
        let data = frame.as_bytes();
        let sent = send_now(fd, data);
        if sent == Sent::Nothing {
            // A full socket: until the protocol finds the transport drained, every frame takes
            // the usual way.
            slf.try_borrow_mut()?.direct = false;
            return Ok(false);
        }
        let mut behind = false;
        if let Sent::Part(n) = sent {
            // The rest goes first in the transport's buffer; while it waits there, nothing may
            // overtake it.
            transport.call_method1(intern!(py, "write"), (PyBytes::new(py, &data[n..]),))?;
            behind = transport
                .call_method0(intern!(py, "get_write_buffer_size"))?
                .extract::<usize>()?
                > 0;
        }
        let mut outlet = slf.try_borrow_mut()?;
        outlet.written += 1;
        if behind {
            outlet.direct = false;
        }
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
    fn py_write(slf: &Bound<'_, Self>, frame: &Bound<'_, PyBytes>) -> PyResult<bool> {
        Self::write_frame(slf, frame)
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
