//! Python bindings of [`crate::manager`]: the `BroadcastManager` class.
//!
//! No method holds the registry borrowed while Python code runs: writers are called on a
//! snapshot after the borrow ends, Python objects are built from owned copies, and whatever a
//! mutation released is dropped after the borrow ends. So writers (and finalizers) may call back
//! into the manager.

use std::collections::HashSet;

use pyo3::exceptions::{PyException, PyKeyError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyTuple};
use pyo3::PyTraverseError;

use crate::manager::{ConnId, Registry, RegistryError};
use crate::py_outlet::Outlet;

struct Writer {
    callable: Py<PyAny>,
    native: bool,
    outlet: Option<Py<Outlet>>,
}

impl Writer {
    fn copy(&self, py: Python<'_>) -> Self {
        Writer {
            callable: self.callable.clone_ref(py),
            native: self.native,
            outlet: self.outlet.as_ref().map(|outlet| outlet.clone_ref(py)),
        }
    }

    /// True if the outlet wrote `frame`; false if the callable must take it.
    fn write_direct(&self, frame: &Bound<'_, PyBytes>) -> PyResult<bool> {
        let Some(outlet) = &self.outlet else {
            return Ok(false);
        };
        Outlet::write_frame(outlet.bind(frame.py()), frame)
    }
}

fn registry_error(error: RegistryError) -> PyErr {
    match error {
        RegistryError::DuplicateConnection(id) => {
            PyValueError::new_err(format!("connection {id} is already registered"))
        }
        RegistryError::UnknownConnection(id) => PyKeyError::new_err(id),
        RegistryError::UnknownChannel(name) => PyKeyError::new_err(name),
    }
}

fn busy<E>(_: E) -> PyErr {
    PyRuntimeError::new_err("BroadcastManager is in use by another call")
}

enum Exclusions {
    Nothing,
    One(ConnId),
    Many(HashSet<ConnId>),
}

impl Exclusions {
    /// None, one id, or any iterable of ids.
    fn from_python(exclude: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let Some(exclude) = exclude else {
            return Ok(Exclusions::Nothing);
        };
        match exclude.extract::<ConnId>() {
            Ok(id) => return Ok(Exclusions::One(id)),
            Err(err) if !err.is_instance_of::<PyTypeError>(exclude.py()) => return Err(err),
            Err(_) => {}
        }
        let ids = exclude
            .try_iter()?
            .map(|item| item?.extract::<ConnId>())
            .collect::<PyResult<HashSet<_>>>()?;
        Ok(Exclusions::Many(ids))
    }

    fn contains(&self, id: ConnId) -> bool {
        match self {
            Exclusions::Nothing => false,
            Exclusions::One(excluded) => *excluded == id,
            Exclusions::Many(excluded) => excluded.contains(&id),
        }
    }
}

/// Connections and channels, and the fan-out of one payload to every member of a channel.
#[pyclass(module = "haske._rust", weakref)]
pub struct BroadcastManager {
    registry: Registry<Writer>,
}

impl BroadcastManager {
    fn read<R>(slf: &Bound<'_, Self>, f: impl FnOnce(&Registry<Writer>) -> R) -> PyResult<R> {
        Ok(f(&slf.try_borrow().map_err(busy)?.registry))
    }

    /// Runs `f` on the registry; what it returns is dropped by the caller, after the borrow.
    fn write<R>(slf: &Bound<'_, Self>, f: impl FnOnce(&mut Registry<Writer>) -> R) -> PyResult<R> {
        Ok(f(&mut slf.try_borrow_mut().map_err(busy)?.registry))
    }
}

fn owned(names: Vec<&str>) -> Vec<String> {
    names.into_iter().map(str::to_owned).collect()
}

#[pymethods]
impl BroadcastManager {
    #[new]
    fn new() -> Self {
        BroadcastManager {
            registry: Registry::default(),
        }
    }

    /// Registers a connection; `native` writers take pre-encoded frames, which fan-out offers
    /// to the connection's `outlet` first when it has one.
    #[pyo3(signature = (conn_id, writer, *, native=false, outlet=None))]
    fn add_connection(
        slf: &Bound<'_, Self>,
        conn_id: ConnId,
        writer: &Bound<'_, PyAny>,
        native: bool,
        outlet: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        if !writer.is_callable() {
            return Err(PyTypeError::new_err(format!(
                "writer must be callable, not {}",
                writer.get_type().name()?
            )));
        }
        let outlet = match outlet {
            None => None,
            Some(outlet) if !native => {
                return Err(PyValueError::new_err(format!(
                    "an outlet needs a native writer (got {})",
                    outlet.get_type().name()?
                )))
            }
            Some(outlet) => Some(outlet.cast::<Outlet>()?.clone().unbind()),
        };
        let writer = Writer {
            callable: writer.clone().unbind(),
            native,
            outlet,
        };
        let released = Self::write(slf, |registry| registry.add_connection(conn_id, writer))?;
        released.map(drop).map_err(registry_error)
    }

    /// Unregisters a connection and takes it out of every channel; false if it was unknown.
    fn remove_connection(slf: &Bound<'_, Self>, conn_id: ConnId) -> PyResult<bool> {
        let released = Self::write(slf, |registry| registry.remove_connection(conn_id))?;
        Ok(released.is_some())
    }

    fn has_connection(slf: &Bound<'_, Self>, conn_id: ConnId) -> PyResult<bool> {
        Self::read(slf, |registry| registry.has_connection(conn_id))
    }

    /// Creates a channel; false if it existed.
    fn create_channel(slf: &Bound<'_, Self>, name: &str) -> PyResult<bool> {
        Self::write(slf, |registry| registry.create_channel(name))
    }

    /// Deletes a channel (its members stay connected); false if it was unknown.
    fn remove_channel(slf: &Bound<'_, Self>, name: &str) -> PyResult<bool> {
        let released = Self::write(slf, |registry| registry.remove_channel(name))?;
        Ok(released.is_some())
    }

    /// Channel names, sorted.
    fn channels(slf: &Bound<'_, Self>) -> PyResult<Vec<String>> {
        Self::read(slf, |registry| owned(registry.channels()))
    }

    /// Adds a connection to a channel; false if it was a member already.
    fn join(slf: &Bound<'_, Self>, conn_id: ConnId, channel: &str) -> PyResult<bool> {
        let (joined, _released) = Self::write(slf, |registry| registry.join(conn_id, channel))?
            .map_err(registry_error)?;
        Ok(joined)
    }

    /// Takes a connection out of a channel; false if it was not a member.
    fn leave(slf: &Bound<'_, Self>, conn_id: ConnId, channel: &str) -> PyResult<bool> {
        let (left, _released) = Self::write(slf, |registry| registry.leave(conn_id, channel))?;
        Ok(left)
    }

    /// Sorted ids of a channel's members, or of every connection.
    #[pyo3(signature = (channel=None))]
    fn members(slf: &Bound<'_, Self>, channel: Option<&str>) -> PyResult<Vec<ConnId>> {
        Self::read(slf, |registry| registry.members(channel))?.map_err(registry_error)
    }

    #[pyo3(signature = (channel=None))]
    fn count(slf: &Bound<'_, Self>, channel: Option<&str>) -> PyResult<usize> {
        Self::read(slf, |registry| registry.count(channel))?.map_err(registry_error)
    }

    /// Sorted names of the channels a connection has joined.
    fn channels_of(slf: &Bound<'_, Self>, conn_id: ConnId) -> PyResult<Vec<String>> {
        Self::read(slf, |registry| registry.channels_of(conn_id).map(owned))?
            .map_err(registry_error)
    }

    /// Calls each member's writer once, in id order: native writers get `frame`, the others
    /// `message` (or `frame` when it is None). With `direct`, a member whose outlet writes
    /// `frame` straight to its socket counts as delivered without a call.
    ///
    /// Returns `(delivered, overloaded_ids, failed_ids)`: a writer that returned False is
    /// overloaded, one that raised an Exception failed; BaseExceptions such as
    /// KeyboardInterrupt propagate.
    #[pyo3(signature = (frame, channel=None, *, message=None, exclude=None, direct=true))]
    fn fanout(
        slf: &Bound<'_, Self>,
        frame: &Bound<'_, PyBytes>,
        channel: Option<&str>,
        message: Option<&Bound<'_, PyAny>>,
        exclude: Option<&Bound<'_, PyAny>>,
        direct: bool,
    ) -> PyResult<(usize, Vec<ConnId>, Vec<ConnId>)> {
        let py = slf.py();
        let excluded = Exclusions::from_python(exclude)?;
        let members = Self::write(slf, |registry| registry.snapshot(channel, |w| w.copy(py)))?
            .map_err(registry_error)?;
        let native_args = PyTuple::new(py, [frame])?;
        let other_args = match message {
            Some(message) => PyTuple::new(py, [message])?,
            None => native_args.clone(),
        };
        let overloaded_flag = PyBool::new(py, false);
        let mut delivered = 0;
        let mut overloaded = Vec::new();
        let mut failed = Vec::new();
        for member in members
            .iter()
            .filter(|member| !excluded.contains(member.id))
        {
            let writer = &member.writer;
            let written = if direct {
                writer.write_direct(frame)
            } else {
                Ok(false)
            };
            match written {
                Ok(true) => {
                    delivered += 1;
                    continue;
                }
                Ok(false) => {}
                Err(err) if err.is_instance_of::<PyException>(py) => {
                    failed.push(member.id);
                    continue;
                }
                Err(err) => return Err(err),
            }
            let args = if writer.native {
                &native_args
            } else {
                &other_args
            };
            match writer.callable.bind(py).call1(args) {
                Ok(result) if result.is(&*overloaded_flag) => overloaded.push(member.id),
                Ok(_) => delivered += 1,
                Err(err) if err.is_instance_of::<PyException>(py) => failed.push(member.id),
                Err(err) => return Err(err),
            }
        }
        Ok((delivered, overloaded, failed))
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        Self::read(slf, |registry| {
            format!(
                "<BroadcastManager connections={} channels={}>",
                registry.count(None).unwrap_or_default(),
                registry.channels().len()
            )
        })
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        for writer in self.registry.writers() {
            visit.call(&writer.callable)?;
            if let Some(outlet) = &writer.outlet {
                visit.call(outlet)?;
            }
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.registry = Registry::default();
    }
}

pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<BroadcastManager>()
}
