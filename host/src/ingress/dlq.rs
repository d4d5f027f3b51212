//! TEMPORARY until the dlq branch lands.
use super::routes::{Reject, Resp};
use crate::platform::Platform;
pub async fn page(_: &Platform, _: &str, _: Option<&str>, _: usize) -> Result<Resp, Reject> {
    Err(Reject::new(hyper::StatusCode::NOT_FOUND, "x"))
}
pub async fn one(_: &Platform, _: &str, _: &str) -> Result<Resp, Reject> {
    Err(Reject::new(hyper::StatusCode::NOT_FOUND, "x"))
}
pub async fn body(_: &Platform, _: &str, _: &str) -> Result<Resp, Reject> {
    Err(Reject::new(hyper::StatusCode::NOT_FOUND, "x"))
}
