package codec

import (
	"fmt"
	"slices"
)

// Writer accumulates an encoding. The zero value is ready to use.
//
// Writer methods do not return errors; the first error (a value MLS cannot
// represent) is kept and reported by [Writer.Err] and [Writer.Finish], and
// later writes are ignored, so that a whole struct can be written before one
// check. A Writer is mutable and not safe for concurrent use.
type Writer struct {
	buf []byte
	err error
}

// NewWriter returns an empty Writer.
func NewWriter() *Writer { return &Writer{} }

// Grow makes room for n more bytes, so that a large encoding whose size
// is known ahead is written without the buffer being copied as it grows.
func (w *Writer) Grow(n int) {
	if n > 0 {
		w.buf = slices.Grow(w.buf, n)
	}
}

// Err returns the first encoding error, if any.
func (w *Writer) Err() error { return w.err }

// Len returns the number of bytes written so far.
func (w *Writer) Len() int { return len(w.buf) }

// Bytes returns the bytes written so far. The slice aliases the Writer's
// buffer until the next write; callers that keep it should check [Writer.Err]
// first or use [Writer.Finish].
func (w *Writer) Bytes() []byte { return w.buf }

// Finish returns the encoding, or the first error that occurred.
func (w *Writer) Finish() ([]byte, error) {
	if w.err != nil {
		return nil, w.err
	}
	return w.buf, nil
}

// Fail records err as the Writer's error unless one is already recorded; it
// lets struct encoders report semantic problems through the same channel.
func (w *Writer) Fail(err error) {
	if w.err == nil && err != nil {
		w.err = err
	}
}

// Uint8 writes v.
func (w *Writer) Uint8(v uint8) {
	if w.err == nil {
		w.buf = append(w.buf, v)
	}
}

// Uint16 writes v big-endian.
func (w *Writer) Uint16(v uint16) {
	if w.err == nil {
		w.buf = append(w.buf, byte(v>>8), byte(v))
	}
}

// Uint32 writes v big-endian.
func (w *Writer) Uint32(v uint32) {
	if w.err == nil {
		w.buf = append(w.buf, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	}
}

// Uint64 writes v big-endian.
func (w *Writer) Uint64(v uint64) {
	if w.err == nil {
		w.buf = append(w.buf, byte(v>>56), byte(v>>48), byte(v>>40), byte(v>>32),
			byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	}
}

// Varint writes v as an MLS variable-length integer.
func (w *Writer) Varint(v uint64) {
	if w.err != nil {
		return
	}
	w.buf, w.err = AppendVarint(w.buf, v)
}

// Raw writes b without a length prefix (a fixed-size array such as
// opaque reuse_guard[4]).
func (w *Writer) Raw(b []byte) {
	if w.err == nil {
		w.buf = append(w.buf, b...)
	}
}

// OpaqueV writes b as opaque<V>: a variable-length header then the bytes.
func (w *Writer) OpaqueV(b []byte) {
	w.Varint(uint64(len(b)))
	w.Raw(b)
}

// StringV writes s as opaque<V> (MLS labels and UTF-8 strings).
func (w *Writer) StringV(s string) {
	w.Varint(uint64(len(s)))
	if w.err == nil {
		w.buf = append(w.buf, s...)
	}
}

// Optional writes the presence octet of optional<T>; the caller writes the
// value itself after it when present is true.
func (w *Writer) Optional(present bool) {
	if present {
		w.Uint8(1)
	} else {
		w.Uint8(0)
	}
}

// VectorV writes a <V> vector whose content is produced by fn: the content is
// encoded first and then prefixed with its byte length.
//
// fn writes straight into w, after a one-byte length (a short vector's),
// and the content is moved up when its length needs two or four bytes. A
// vector written into a buffer of its own would be copied again at every
// level it is nested in: a commit's path (nodes of ciphertexts, in the
// path, in the commit, in the framed content) five times, allocations
// included.
func (w *Writer) VectorV(fn func(w *Writer)) {
	if w.err != nil {
		return
	}
	at := len(w.buf)
	w.buf = append(w.buf, 0)
	fn(w)
	if w.err != nil {
		return
	}
	n := len(w.buf) - at - 1
	var lenBuf [4]byte
	prefix, err := AppendVarint(lenBuf[:0], uint64(n))
	if err != nil {
		w.err = fmt.Errorf("%w: vector of %d bytes exceeds 2^30-1", ErrEncode, n)
		return
	}
	if grow := len(prefix) - 1; grow > 0 {
		w.buf = append(w.buf, lenBuf[:grow]...) // room; overwritten by the move
		copy(w.buf[at+len(prefix):], w.buf[at+1:at+1+n])
	}
	copy(w.buf[at:], prefix)
}
