package codec

import (
	"errors"
	"fmt"
)

// ErrDecode is wrapped by every decoding error: truncated input, a
// non-minimal or invalid variable-length integer, a bad presence octet,
// trailing bytes, or a value out of the range the caller allows.
var ErrDecode = errors.New("mls/codec: malformed encoding")

// ErrEncode is wrapped by encoding errors: a value that MLS cannot represent,
// such as a vector of 2^30 bytes or more.
var ErrEncode = errors.New("mls/codec: value cannot be encoded")

// MaxVarint is the largest value an MLS variable-length integer can hold
// (2^30 - 1); it bounds every <V> vector length.
const MaxVarint = 1<<30 - 1

// VarintLen returns the number of bytes the minimal encoding of v takes, or 0
// if v exceeds [MaxVarint].
func VarintLen(v uint64) int {
	switch {
	case v < 1<<6:
		return 1
	case v < 1<<14:
		return 2
	case v <= MaxVarint:
		return 4
	default:
		return 0
	}
}

// AppendVarint appends the minimal MLS variable-length encoding of v to b.
// It fails with an error wrapping [ErrEncode] if v exceeds [MaxVarint].
func AppendVarint(b []byte, v uint64) ([]byte, error) {
	switch VarintLen(v) {
	case 1:
		return append(b, byte(v)), nil
	case 2:
		return append(b, 0x40|byte(v>>8), byte(v)), nil
	case 4:
		return append(b, 0x80|byte(v>>24), byte(v>>16), byte(v>>8), byte(v)), nil
	default:
		return b, fmt.Errorf("%w: variable-length integer %d exceeds 2^30-1", ErrEncode, v)
	}
}

// ReadVarint decodes one MLS variable-length integer from the start of b and
// returns its value and the number of bytes consumed. It rejects the invalid
// prefix 0b11 and non-minimal encodings, as RFC 9420 §2.1.2 requires.
func ReadVarint(b []byte) (v uint32, n int, err error) {
	if len(b) == 0 {
		return 0, 0, fmt.Errorf("%w: variable-length integer: need 1 byte, have 0", ErrDecode)
	}
	prefix := b[0] >> 6
	if prefix == 3 {
		return 0, 0, fmt.Errorf("%w: variable-length integer has invalid prefix 0b11", ErrDecode)
	}
	n = 1 << prefix
	if len(b) < n {
		return 0, 0, fmt.Errorf("%w: variable-length integer: need %d bytes, have %d", ErrDecode, n, len(b))
	}
	v = uint32(b[0] & 0x3f)
	for i := 1; i < n; i++ {
		v = v<<8 | uint32(b[i])
	}
	if prefix >= 1 && v < 1<<(8*(n/2)-2) {
		return 0, 0, fmt.Errorf("%w: variable-length integer %d is not minimally encoded in %d bytes", ErrDecode, v, n)
	}
	return v, n, nil
}
