//! Python bindings of [`crate::handshake`].

use std::borrow::Cow;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::gc::PyVisit;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyList, PyMemoryView, PyString, PyTuple};
use pyo3::PyTraverseError;

use crate::handshake::{self, ExtensionOffer, Head, InvalidHeader, Refusal};
use crate::py_errors::handshake_error;

/// A parsed request head. `headers` keeps the order and the names as sent.
#[pyclass(frozen, module = "haske._rust")]
pub struct Request {
    #[pyo3(get)]
    method: Py<PyString>,
    #[pyo3(get)]
    target: Py<PyBytes>,
    #[pyo3(get)]
    path: Py<PyString>,
    #[pyo3(get)]
    query: Py<PyBytes>,
    #[pyo3(get)]
    http_version: Py<PyString>,
    #[pyo3(get)]
    headers: Py<PyList>,
    #[pyo3(get)]
    head_size: usize,
}

#[pymethods]
impl Request {
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "<Request {} {} HTTP/{} ({} headers)>",
            self.method.bind(py),
            self.target.bind(py).repr()?,
            self.http_version.bind(py),
            self.headers.bind(py).len(),
        ))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.headers)
    }
}

impl Request {
    fn new(py: Python<'_>, head: &Head<'_>) -> PyResult<Self> {
        let method = match head.method {
            "GET" => intern!(py, "GET").clone(),
            other => PyString::new(py, other),
        };
        let http_version = match head.minor_version {
            0 => intern!(py, "1.0"),
            _ => intern!(py, "1.1"),
        };
        let headers = head
            .headers
            .iter()
            .map(|(name, value)| {
                PyTuple::new(
                    py,
                    [PyBytes::new(py, name.as_bytes()), PyBytes::new(py, value)],
                )
            })
            .collect::<PyResult<Vec<_>>>()?;
        Ok(Request {
            method: method.unbind(),
            target: PyBytes::new(py, head.target).unbind(),
            path: PyString::new(py, &head.path()).unbind(),
            query: PyBytes::new(py, head.query()).unbind(),
            http_version: http_version.clone().unbind(),
            headers: PyList::new(py, headers)?.unbind(),
            head_size: head.size,
        })
    }
}

/// The verdict on an upgrade request; true when the upgrade can be accepted.
#[pyclass(frozen, module = "haske._rust")]
pub struct Validation {
    #[pyo3(get)]
    ok: bool,
    #[pyo3(get)]
    status: u16,
    #[pyo3(get)]
    reason: &'static str,
    #[pyo3(get)]
    key: String,
    #[pyo3(get)]
    accept: String,
    #[pyo3(get)]
    subprotocols: Vec<String>,
    #[pyo3(get)]
    extensions: Vec<ExtensionOffer>,
}

#[pymethods]
impl Validation {
    fn __bool__(&self) -> bool {
        self.ok
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(if self.ok {
            format!(
                "<Validation 101 ok key={}>",
                PyString::new(py, &self.key).repr()?
            )
        } else {
            format!(
                "<Validation {} {}>",
                self.status,
                PyString::new(py, self.reason).repr()?
            )
        })
    }
}

impl Validation {
    fn accepted(offer: handshake::Offer) -> Self {
        Validation {
            ok: true,
            status: 101,
            reason: "",
            key: offer.key,
            accept: offer.accept,
            subprotocols: offer.subprotocols,
            extensions: offer.extensions,
        }
    }

    fn refused(refusal: Refusal) -> Self {
        Validation {
            ok: false,
            status: refusal.status,
            reason: refusal.reason,
            key: String::new(),
            accept: String::new(),
            subprotocols: Vec::new(),
            extensions: Vec::new(),
        }
    }
}

fn bytes_of<'a>(data: &'a Bound<'_, PyAny>) -> PyResult<Cow<'a, [u8]>> {
    if let Ok(bytes) = data.cast::<PyBytes>() {
        Ok(Cow::Borrowed(bytes.as_bytes()))
    } else if let Ok(array) = data.cast::<PyByteArray>() {
        Ok(Cow::Owned(array.to_vec()))
    } else if data.is_instance_of::<PyMemoryView>() {
        let copy = data.call_method0(intern!(data.py(), "tobytes"))?;
        Ok(Cow::Owned(copy.cast::<PyBytes>()?.as_bytes().to_vec()))
    } else {
        Err(PyTypeError::new_err(format!(
            "parse_request() expects bytes, bytearray or memoryview, not {}",
            data.get_type().name()?
        )))
    }
}

type HeaderPair<'py> = (Bound<'py, PyBytes>, Bound<'py, PyBytes>);

const NOT_PAIRS: &str = "headers must be (name, value) pairs of bytes";

fn header_pair<'py>(item: &Bound<'py, PyAny>) -> PyResult<HeaderPair<'py>> {
    let (name, value) = match (item.cast::<PyTuple>(), item.cast::<PyList>()) {
        (Ok(tuple), _) if tuple.len() == 2 => (tuple.get_item(0)?, tuple.get_item(1)?),
        (_, Ok(list)) if list.len() == 2 => (list.get_item(0)?, list.get_item(1)?),
        _ => return Err(PyTypeError::new_err(NOT_PAIRS)),
    };
    match (name.cast_into::<PyBytes>(), value.cast_into::<PyBytes>()) {
        (Ok(name), Ok(value)) => Ok((name, value)),
        _ => Err(PyTypeError::new_err(NOT_PAIRS)),
    }
}

fn header_pairs<'py>(headers: &Bound<'py, PyAny>) -> PyResult<Vec<HeaderPair<'py>>> {
    if let Ok(list) = headers.cast::<PyList>() {
        return list.iter().map(|item| header_pair(&item)).collect();
    }
    headers
        .try_iter()?
        .map(|item| header_pair(&item?))
        .collect()
}

fn as_slices<'a>(pairs: &'a [HeaderPair<'_>]) -> Vec<(&'a [u8], &'a [u8])> {
    pairs
        .iter()
        .map(|(name, value)| (name.as_bytes(), value.as_bytes()))
        .collect()
}

fn invalid_header(error: InvalidHeader) -> PyErr {
    PyValueError::new_err(error.0)
}

/// The `Sec-WebSocket-Accept` value for a client's `Sec-WebSocket-Key`.
#[pyfunction]
fn websocket_handshake(key: &str) -> String {
    handshake::accept_key(key.as_bytes())
}

/// Parses an HTTP/1.1 request head; None while it is incomplete.
///
/// Raises HandshakeError: 431 for a head over 16 KiB, 400 for more than 100 headers or a
/// malformed request line or header.
#[pyfunction]
fn parse_request(data: &Bound<'_, PyAny>) -> PyResult<Option<Request>> {
    let py = data.py();
    let bytes = bytes_of(data)?;
    match handshake::parse_head(&bytes) {
        Ok(Some(head)) => Request::new(py, &head).map(Some),
        Ok(None) => Ok(None),
        Err(refusal) => Err(handshake_error(py, refusal.status, refusal.reason)),
    }
}

/// Checks an upgrade request (RFC 6455 §4.2.1); never raises for a bad request.
#[pyfunction]
fn validate_request(
    method: &Bound<'_, PyString>,
    http_version: &Bound<'_, PyString>,
    headers: &Bound<'_, PyAny>,
) -> PyResult<Validation> {
    let pairs = header_pairs(headers)?;
    let verdict = handshake::validate(
        &method.to_string_lossy(),
        &http_version.to_string_lossy(),
        &as_slices(&pairs),
    );
    Ok(match verdict {
        Ok(offer) => Validation::accepted(offer),
        Err(refusal) => Validation::refused(refusal),
    })
}

/// The `101 Switching Protocols` response; ValueError for a header that would break it.
#[pyfunction]
#[pyo3(signature = (accept, subprotocol=None, extensions=None, extra_headers=None))]
fn build_response<'py>(
    accept: &Bound<'py, PyString>,
    subprotocol: Option<&Bound<'py, PyString>>,
    extensions: Option<&Bound<'py, PyString>>,
    extra_headers: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyBytes>> {
    let py = accept.py();
    let pairs = extra_headers
        .map(header_pairs)
        .transpose()?
        .unwrap_or_default();
    let subprotocol = subprotocol.map(|text| text.to_string_lossy());
    let extensions = extensions.map(|text| text.to_string_lossy());
    let response = handshake::build_response(
        &accept.to_string_lossy(),
        subprotocol.as_deref(),
        extensions.as_deref(),
        &as_slices(&pairs),
    )
    .map_err(invalid_header)?;
    Ok(PyBytes::new(py, &response))
}

/// A response body: bytes or bytearray.
enum Body<'py> {
    Bytes(Bound<'py, PyBytes>),
    Copied(Vec<u8>),
}

impl Default for Body<'_> {
    fn default() -> Self {
        Body::Copied(Vec::new())
    }
}

impl Body<'_> {
    fn as_slice(&self) -> &[u8] {
        match self {
            Body::Bytes(bytes) => bytes.as_bytes(),
            Body::Copied(bytes) => bytes,
        }
    }
}

impl<'py> FromPyObject<'_, 'py> for Body<'py> {
    type Error = PyErr;

    fn extract(body: Borrowed<'_, 'py, PyAny>) -> PyResult<Self> {
        if let Ok(bytes) = body.cast::<PyBytes>() {
            Ok(Body::Bytes(bytes.to_owned()))
        } else if let Ok(array) = body.cast::<PyByteArray>() {
            Ok(Body::Copied(array.to_vec()))
        } else {
            Err(PyTypeError::new_err(format!(
                "body must be bytes or bytearray, not {}",
                body.get_type().name()?
            )))
        }
    }
}

/// A complete response refusing the upgrade, with `Connection: close`.
#[pyfunction]
#[pyo3(signature = (status, reason, extra_headers=None, body=Body::default()))]
fn build_rejection<'py>(
    py: Python<'py>,
    status: i64,
    reason: &str,
    extra_headers: Option<&Bound<'py, PyAny>>,
    body: Body<'py>,
) -> PyResult<Bound<'py, PyBytes>> {
    let pairs = extra_headers
        .map(header_pairs)
        .transpose()?
        .unwrap_or_default();
    let response = handshake::build_rejection(status, reason, &as_slices(&pairs), body.as_slice())
        .map_err(invalid_header)?;
    Ok(PyBytes::new(py, &response))
}

pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add("MAX_REQUEST_HEAD", handshake::MAX_REQUEST_HEAD)?;
    module.add("MAX_HEADERS", handshake::MAX_HEADERS)?;
    module.add_class::<Request>()?;
    module.add_class::<Validation>()?;
    module.add_function(wrap_pyfunction!(websocket_handshake, module)?)?;
    module.add_function(wrap_pyfunction!(parse_request, module)?)?;
    module.add_function(wrap_pyfunction!(validate_request, module)?)?;
    module.add_function(wrap_pyfunction!(build_response, module)?)?;
    module.add_function(wrap_pyfunction!(build_rejection, module)?)?;
    Ok(())
}
