package codec

import "fmt"

// Reader decodes an encoding strictly. Each method returns an error wrapping
// [ErrDecode] on malformed input; the first error is also kept, so after an
// error every later call fails with it and [Reader.Done] reports it. A Reader
// is mutable and not safe for concurrent use.
//
// Byte slices returned by a Reader are copies: callers may keep them after
// the input buffer is reused.
type Reader struct {
	data []byte
	off  int
	err  error
}

// NewReader returns a Reader over b. It does not copy b; b must not change
// while the Reader is in use.
func NewReader(b []byte) *Reader { return &Reader{data: b} }

// Err returns the first decoding error, if any.
func (r *Reader) Err() error { return r.err }

// Len returns the number of unread bytes.
func (r *Reader) Len() int { return len(r.data) - r.off }

// Empty reports whether all input has been consumed.
func (r *Reader) Empty() bool { return r.off >= len(r.data) }

// Offset returns the number of bytes consumed so far.
func (r *Reader) Offset() int { return r.off }

// Done returns the first decoding error, or an error wrapping [ErrDecode] if
// unread bytes remain. Every decoder of a complete message ends with it.
func (r *Reader) Done() error {
	if r.err != nil {
		return r.err
	}
	if n := r.Len(); n != 0 {
		r.err = fmt.Errorf("%w: %d trailing bytes after offset %d", ErrDecode, n, r.off)
		return r.err
	}
	return nil
}

// Fail records err (which should wrap [ErrDecode]) as the Reader's error
// unless one is already recorded, and returns the recorded error; struct
// decoders use it to report out-of-range field values.
func (r *Reader) Fail(err error) error {
	if r.err == nil && err != nil {
		r.err = err
	}
	return r.err
}

// Failf records an error wrapping [ErrDecode] built from format and args,
// annotated with the current offset, and returns the recorded error.
func (r *Reader) Failf(format string, args ...any) error {
	return r.Fail(fmt.Errorf("%w: at offset %d: %s", ErrDecode, r.off, fmt.Sprintf(format, args...)))
}

func (r *Reader) take(n int, what string) ([]byte, error) {
	if r.err != nil {
		return nil, r.err
	}
	if n < 0 || r.Len() < n {
		return nil, r.Failf("%s: need %d bytes, have %d", what, n, r.Len())
	}
	b := r.data[r.off : r.off+n]
	r.off += n
	return b, nil
}

// Uint8 reads one byte.
func (r *Reader) Uint8() (uint8, error) {
	b, err := r.take(1, "uint8")
	if err != nil {
		return 0, err
	}
	return b[0], nil
}

// Uint16 reads a big-endian uint16.
func (r *Reader) Uint16() (uint16, error) {
	b, err := r.take(2, "uint16")
	if err != nil {
		return 0, err
	}
	return uint16(b[0])<<8 | uint16(b[1]), nil
}

// Uint32 reads a big-endian uint32.
func (r *Reader) Uint32() (uint32, error) {
	b, err := r.take(4, "uint32")
	if err != nil {
		return 0, err
	}
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]), nil
}

// Uint64 reads a big-endian uint64.
func (r *Reader) Uint64() (uint64, error) {
	b, err := r.take(8, "uint64")
	if err != nil {
		return 0, err
	}
	var v uint64
	for _, c := range b {
		v = v<<8 | uint64(c)
	}
	return v, nil
}

// Varint reads an MLS variable-length integer, rejecting the 0b11 prefix and
// non-minimal encodings.
func (r *Reader) Varint() (uint32, error) {
	if r.err != nil {
		return 0, r.err
	}
	v, n, err := ReadVarint(r.data[r.off:])
	if err != nil {
		return 0, r.Fail(fmt.Errorf("at offset %d: %w", r.off, err))
	}
	r.off += n
	return v, nil
}

// Raw reads exactly n bytes (a fixed-size array) and returns a copy.
func (r *Reader) Raw(n int) ([]byte, error) {
	b, err := r.take(n, "fixed-size array")
	if err != nil {
		return nil, err
	}
	return append([]byte(nil), b...), nil
}

// OpaqueV reads opaque<V> and returns a copy of its content (never nil, so
// that an empty vector re-encodes and compares as empty).
func (r *Reader) OpaqueV() ([]byte, error) {
	n, err := r.Varint()
	if err != nil {
		return nil, err
	}
	b, err := r.take(int(n), "opaque<V> content")
	if err != nil {
		return nil, err
	}
	return append([]byte{}, b...), nil
}

// StringV reads opaque<V> as a string.
func (r *Reader) StringV() (string, error) {
	b, err := r.OpaqueV()
	return string(b), err
}

// Optional reads the presence octet of optional<T>, rejecting values other
// than 0 and 1; the caller reads the value itself when it returns true.
func (r *Reader) Optional() (bool, error) {
	v, err := r.Uint8()
	if err != nil {
		return false, err
	}
	switch v {
	case 0:
		return false, nil
	case 1:
		return true, nil
	default:
		return false, r.Failf("optional presence octet is %d, want 0 or 1", v)
	}
}

// VectorV reads the header of a <V> vector and returns a Reader over exactly
// its content. The returned Reader is independent: the caller decodes the
// elements from it until it is [Reader.Empty]. Errors in the sub-reader are
// not propagated to r; callers return them.
func (r *Reader) VectorV() (*Reader, error) {
	n, err := r.Varint()
	if err != nil {
		return nil, err
	}
	b, err := r.take(int(n), "<V> vector content")
	if err != nil {
		return nil, err
	}
	return NewReader(b), nil
}

// ForEachV reads a <V> vector and calls fn for each element until the
// vector's content is consumed. fn must consume at least one byte per call.
// An error from fn, or an element that overruns the vector, is recorded in r
// and returned.
func (r *Reader) ForEachV(fn func(r *Reader) error) error {
	sub, err := r.VectorV()
	if err != nil {
		return err
	}
	base := r.off - sub.Len()
	for !sub.Empty() {
		before := sub.off
		if err := fn(sub); err != nil {
			return r.Fail(err)
		}
		if err := sub.Err(); err != nil {
			return r.Fail(err)
		}
		if sub.off == before {
			return r.Fail(fmt.Errorf("%w: at offset %d: vector element decoder consumed no bytes", ErrDecode, base+before))
		}
	}
	return nil
}
