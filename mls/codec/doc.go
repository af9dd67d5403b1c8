// Package codec encodes and strictly decodes the TLS presentation language as
// extended by MLS (fixed-width integers, variable-length vector headers,
// optional values) per [RFC 9420 §2.1].
//
// Decoding is strict: non-minimal or out-of-range variable-length integers,
// truncated input, presence octets other than 0 or 1 and trailing bytes (see
// [Reader.Done]) are all reported as errors wrapping [ErrDecode].
//
// [RFC 9420 §2.1]: https://www.rfc-editor.org/rfc/rfc9420.html#section-2.1
package codec
