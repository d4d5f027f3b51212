//! [`Request`] → `wasi:http/outgoing-handler` → [`Response`], on the `wasi` crate's bindings.
//! Everything blocks (the host cuts it off at the invocation's deadline).

use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use wasi::io::streams::StreamError;

use crate::http::{MAX_REQUEST_BODY, transport_error};
use crate::{Error, Request, Response};

/// Bytes per blocking write (the most `blocking-write-and-flush` takes at once).
const WRITE_CHUNK: usize = 4096;
/// Bytes asked for per read.
const READ_CHUNK: u64 = 64 * 1024;

pub(crate) fn send(req: &Request) -> Result<Response, Error> {
    let url = req.url.as_str();
    let fail = |why: String| transport_error(url, &why);
    if req.body.len() > MAX_REQUEST_BODY {
        return Err(Error::permanent(format!(
            "request body to {url} is {} bytes; at most {MAX_REQUEST_BODY}",
            req.body.len()
        )));
    }
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| Error::permanent(format!("`{url}` is not an absolute URL")))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let entries: Vec<(String, Vec<u8>)> = req
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_bytes().to_vec()))
        .collect();
    let headers = Fields::from_list(&entries)
        .map_err(|e| Error::permanent(format!("request headers for {url}: {e:?}")))?;
    let out = OutgoingRequest::new(headers);
    let method = match req.method.as_str() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "OPTIONS" => Method::Options,
        other => Method::Other(other.to_string()),
    };
    let bad = |what: &str| Error::permanent(format!("request to {url}: invalid {what}"));
    out.set_method(&method).map_err(|()| bad("method"))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_string()),
    };
    out.set_scheme(Some(&scheme)).map_err(|()| bad("scheme"))?;
    out.set_authority(Some(authority))
        .map_err(|()| bad("host"))?;
    out.set_path_with_query(Some(path))
        .map_err(|()| bad("path"))?;
    let body = out.body().map_err(|()| bad("body"))?;
    let pending = outgoing_handler::handle(out, None).map_err(|e| fail(code(&e)))?;
    // A request the host refuses fails its body stream too: on a write error, the answer's
    // error (which says why) wins over the stream's.
    let mut write_error = None;
    {
        let stream = body.write().map_err(|()| bad("body stream"))?;
        for chunk in req.body.chunks(WRITE_CHUNK) {
            if let Err(e) = stream.blocking_write_and_flush(chunk) {
                write_error = Some(format!("writing the body: {}", stream_error(e)));
                break;
            }
        }
    }
    if write_error.is_none()
        && let Err(e) = OutgoingBody::finish(body, None)
    {
        write_error = Some(code(&e));
    }
    pending.subscribe().block();
    let answer = pending
        .get()
        .ok_or_else(|| fail("no answer".into()))?
        .map_err(|()| fail("answer taken twice".into()))?
        .map_err(|e| fail(code(&e)))?;
    if let Some(e) = write_error {
        return Err(fail(e));
    }
    let status = answer.status();
    let headers = answer
        .headers()
        .entries()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect();
    let incoming = answer
        .consume()
        .map_err(|()| fail("body taken twice".into()))?;
    let mut bytes = Vec::new();
    {
        let stream = incoming
            .stream()
            .map_err(|()| fail("body stream taken twice".into()))?;
        loop {
            match stream.blocking_read(READ_CHUNK) {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(e) => return Err(fail(format!("reading the answer: {}", stream_error(e)))),
            }
        }
    }
    let _trailers = IncomingBody::finish(incoming);
    Ok(Response {
        status,
        headers,
        body: bytes,
    })
}

fn code(e: &ErrorCode) -> String {
    match e {
        ErrorCode::InternalError(Some(m)) => m.clone(),
        other => format!("{other:?}"),
    }
}

fn stream_error(e: StreamError) -> String {
    match e {
        StreamError::LastOperationFailed(err) => err.to_debug_string(),
        StreamError::Closed => "closed".into(),
    }
}
