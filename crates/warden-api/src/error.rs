//! Error codes shared by the Connect and gRPC sides of the API.

use std::fmt;
use std::str::FromStr;

use http::StatusCode;

/// An RPC error code: the gRPC status codes (except `OK`), with their Connect names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Code {
    /// The operation was cancelled, typically by the caller.
    Canceled,
    /// Unknown error.
    Unknown,
    /// The client specified an invalid argument.
    InvalidArgument,
    /// The deadline expired before the operation could complete.
    DeadlineExceeded,
    /// Some requested entity (e.g. a VM) was not found.
    NotFound,
    /// The entity that a client attempted to create already exists.
    AlreadyExists,
    /// The caller does not have permission to execute the operation.
    PermissionDenied,
    /// Some resource has been exhausted (quota, capacity, request size).
    ResourceExhausted,
    /// The system is not in a state required for the operation (e.g. booting a running VM).
    FailedPrecondition,
    /// The operation was aborted, typically due to a concurrency issue.
    Aborted,
    /// The operation was attempted past the valid range.
    OutOfRange,
    /// The operation is not implemented or not supported.
    Unimplemented,
    /// Internal error: an invariant expected by the system was broken.
    Internal,
    /// The service is currently unavailable (e.g. the daemon is not running).
    Unavailable,
    /// Unrecoverable data loss or corruption.
    DataLoss,
    /// The request does not have valid authentication credentials.
    Unauthenticated,
}

impl Code {
    /// Every code, in gRPC numeric order.
    pub const ALL: [Code; 16] = [
        Code::Canceled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    /// The Connect name, e.g. `"invalid_argument"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Canceled => "canceled",
            Code::Unknown => "unknown",
            Code::InvalidArgument => "invalid_argument",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::Aborted => "aborted",
            Code::OutOfRange => "out_of_range",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::DataLoss => "data_loss",
            Code::Unauthenticated => "unauthenticated",
        }
    }

    /// The HTTP status a Connect server answers with for this code.
    pub fn http_status(self) -> StatusCode {
        match self {
            Code::Canceled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
                StatusCode::BAD_REQUEST
            }
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        }
    }

    /// The code a Connect client infers from an HTTP status when the body has no Connect error.
    pub fn from_http_status(status: StatusCode) -> Code {
        match status.as_u16() {
            400 => Code::Internal,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::Unimplemented,
            429 | 502 | 503 | 504 => Code::Unavailable,
            _ => Code::Unknown,
        }
    }

    /// The matching gRPC status code.
    pub fn grpc_code(self) -> tonic::Code {
        match self {
            Code::Canceled => tonic::Code::Cancelled,
            Code::Unknown => tonic::Code::Unknown,
            Code::InvalidArgument => tonic::Code::InvalidArgument,
            Code::DeadlineExceeded => tonic::Code::DeadlineExceeded,
            Code::NotFound => tonic::Code::NotFound,
            Code::AlreadyExists => tonic::Code::AlreadyExists,
            Code::PermissionDenied => tonic::Code::PermissionDenied,
            Code::ResourceExhausted => tonic::Code::ResourceExhausted,
            Code::FailedPrecondition => tonic::Code::FailedPrecondition,
            Code::Aborted => tonic::Code::Aborted,
            Code::OutOfRange => tonic::Code::OutOfRange,
            Code::Unimplemented => tonic::Code::Unimplemented,
            Code::Internal => tonic::Code::Internal,
            Code::Unavailable => tonic::Code::Unavailable,
            Code::DataLoss => tonic::Code::DataLoss,
            Code::Unauthenticated => tonic::Code::Unauthenticated,
        }
    }

    /// The code for a gRPC status code; `None` for `Ok`.
    pub fn from_grpc(code: tonic::Code) -> Option<Code> {
        Some(match code {
            tonic::Code::Ok => return None,
            tonic::Code::Cancelled => Code::Canceled,
            tonic::Code::Unknown => Code::Unknown,
            tonic::Code::InvalidArgument => Code::InvalidArgument,
            tonic::Code::DeadlineExceeded => Code::DeadlineExceeded,
            tonic::Code::NotFound => Code::NotFound,
            tonic::Code::AlreadyExists => Code::AlreadyExists,
            tonic::Code::PermissionDenied => Code::PermissionDenied,
            tonic::Code::ResourceExhausted => Code::ResourceExhausted,
            tonic::Code::FailedPrecondition => Code::FailedPrecondition,
            tonic::Code::Aborted => Code::Aborted,
            tonic::Code::OutOfRange => Code::OutOfRange,
            tonic::Code::Unimplemented => Code::Unimplemented,
            tonic::Code::Internal => Code::Internal,
            tonic::Code::Unavailable => Code::Unavailable,
            tonic::Code::DataLoss => Code::DataLoss,
            tonic::Code::Unauthenticated => Code::Unauthenticated,
        })
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a Connect code name that is not known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownCode(pub String);

impl fmt::Display for UnknownCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown Connect error code {:?}", self.0)
    }
}

impl std::error::Error for UnknownCode {}

impl FromStr for Code {
    type Err = UnknownCode;

    /// Parses a Connect name such as `"not_found"`.
    fn from_str(s: &str) -> Result<Code, UnknownCode> {
        Code::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownCode(s.to_owned()))
    }
}

/// An RPC error: a code and a human-readable message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// What kind of failure.
    pub code: Code,
    /// What went wrong, for a person.
    pub message: String,
}

macro_rules! constructors {
    ($($(#[$doc:meta])* $name:ident => $code:ident;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(message: impl Into<String>) -> ApiError {
                ApiError::new(Code::$code, message)
            }
        )*
    };
}

impl ApiError {
    /// An error with `code` and `message`.
    pub fn new(code: Code, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }

    constructors! {
        /// A [`Code::InvalidArgument`] error.
        invalid_argument => InvalidArgument;
        /// A [`Code::NotFound`] error.
        not_found => NotFound;
        /// A [`Code::AlreadyExists`] error.
        already_exists => AlreadyExists;
        /// A [`Code::FailedPrecondition`] error.
        failed_precondition => FailedPrecondition;
        /// A [`Code::ResourceExhausted`] error.
        resource_exhausted => ResourceExhausted;
        /// A [`Code::Unauthenticated`] error.
        unauthenticated => Unauthenticated;
        /// A [`Code::PermissionDenied`] error.
        permission_denied => PermissionDenied;
        /// A [`Code::Internal`] error.
        internal => Internal;
        /// A [`Code::Unavailable`] error.
        unavailable => Unavailable;
        /// A [`Code::Unimplemented`] error.
        unimplemented => Unimplemented;
        /// A [`Code::DeadlineExceeded`] error.
        deadline_exceeded => DeadlineExceeded;
    }

    /// The Connect error JSON body: `{"code":"...","message":"..."}`.
    pub fn to_connect_json(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "code": self.code.as_str(),
            "message": self.message,
        }))
        .unwrap_or_default()
    }

    /// Parses a Connect error body; falls back to the HTTP status when the body is not one.
    pub fn from_connect_response(status: StatusCode, body: &[u8]) -> ApiError {
        #[derive(serde::Deserialize)]
        struct Wire {
            code: Option<String>,
            #[serde(default)]
            message: String,
        }
        // Only an object is a Connect error (serde would also read a struct from an array).
        let object = body.trim_ascii_start().starts_with(b"{");
        if let Some(Wire {
            code: Some(code),
            message,
        }) = serde_json::from_slice::<Wire>(body).ok().filter(|_| object)
        {
            return ApiError {
                code: code.parse().unwrap_or(Code::Unknown),
                message,
            };
        }
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        let message = if text.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {}", truncate(text, 512))
        };
        ApiError {
            code: Code::from_http_status(status),
            message,
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> tonic::Status {
        tonic::Status::new(e.code.grpc_code(), e.message)
    }
}

impl From<tonic::Status> for ApiError {
    fn from(s: tonic::Status) -> ApiError {
        ApiError {
            // A gRPC "error" carrying OK is malformed; call it unknown.
            code: Code::from_grpc(s.code()).unwrap_or(Code::Unknown),
            message: s.message().to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in Code::ALL {
            assert_eq!(c.as_str().parse::<Code>().unwrap(), c);
            assert_eq!(Code::from_grpc(c.grpc_code()), Some(c));
            assert_eq!(
                c.grpc_code() as i32,
                Code::ALL.iter().position(|x| *x == c).unwrap() as i32 + 1
            );
        }
        assert!("nope".parse::<Code>().is_err());
    }

    #[test]
    fn connect_body_parse() {
        let e = ApiError::from_connect_response(
            StatusCode::NOT_FOUND,
            br#"{"code":"not_found","message":"no VM x"}"#,
        );
        assert_eq!(e, ApiError::not_found("no VM x"));
        let e = ApiError::from_connect_response(StatusCode::BAD_GATEWAY, b"<html>");
        assert_eq!(e.code, Code::Unavailable);
    }
}
