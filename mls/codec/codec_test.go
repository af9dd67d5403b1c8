package codec_test

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/epochlog/epochlog/mls/codec"
	"github.com/epochlog/epochlog/mls/internal/vectortest"
)

type deserializationCase struct {
	VLBytesHeader vectortest.HexBytes `json:"vlbytes_header"`
	Length        uint32              `json:"length"`
}

// TestDeserializationVectors checks varint header parsing and encoding
// against deserialization.json.
func TestDeserializationVectors(t *testing.T) {
	var cases []deserializationCase
	vectortest.Load(t, "deserialization.json", &cases)
	tally := vectortest.NewTally(t, "deserialization.json")
	for i, tc := range cases {
		tally.Run(t, fmt.Sprintf("case%d_len%d", i, tc.Length), 0, func(t *testing.T) {
			v, n, err := codec.ReadVarint(tc.VLBytesHeader)
			if err != nil {
				t.Fatalf("ReadVarint(%x): %v", tc.VLBytesHeader, err)
			}
			if v != tc.Length || n != len(tc.VLBytesHeader) {
				t.Fatalf("ReadVarint(%x) = %d, %d bytes; want %d, %d bytes", tc.VLBytesHeader, v, n, tc.Length, len(tc.VLBytesHeader))
			}
			enc, err := codec.AppendVarint(nil, uint64(tc.Length))
			if err != nil {
				t.Fatal(err)
			}
			vectortest.Equal(t, "AppendVarint", enc, tc.VLBytesHeader)
			// The header is a vector length: a Reader must accept it
			// followed by exactly that many bytes, and no fewer.
			if tc.Length <= 1<<16 {
				body := append(append([]byte{}, tc.VLBytesHeader...), make([]byte, tc.Length)...)
				r := codec.NewReader(body)
				got, err := r.OpaqueV()
				if err != nil || len(got) != int(tc.Length) || r.Done() != nil {
					t.Fatalf("OpaqueV over header+%d bytes: len %d, err %v, done %v", tc.Length, len(got), err, r.Done())
				}
			}
			if tc.Length > 0 {
				short := append(append([]byte{}, tc.VLBytesHeader...), make([]byte, min(tc.Length, 1<<16)-1)...)
				if tc.Length <= 1<<16 {
					if _, err := codec.NewReader(short).OpaqueV(); !errors.Is(err, codec.ErrDecode) {
						t.Fatalf("OpaqueV with one byte missing: err = %v, want ErrDecode", err)
					}
				}
			}
		})
	}
}

func TestVarintRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"prefix11", []byte{0xc0}},
		{"prefix11max", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		{"nonminimal2_zero", []byte{0x40, 0x00}},
		{"nonminimal2_63", []byte{0x40, 0x3f}},
		{"nonminimal4_16383", []byte{0x80, 0x00, 0x3f, 0xff}},
		{"nonminimal4_zero", []byte{0x80, 0x00, 0x00, 0x00}},
		{"truncated2", []byte{0x40}},
		{"truncated4", []byte{0x80, 0x00, 0x40}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := codec.ReadVarint(tc.in); !errors.Is(err, codec.ErrDecode) {
				t.Fatalf("ReadVarint(%x) err = %v, want ErrDecode", tc.in, err)
			}
			r := codec.NewReader(tc.in)
			if _, err := r.Varint(); !errors.Is(err, codec.ErrDecode) {
				t.Fatalf("Reader.Varint(%x) err = %v, want ErrDecode", tc.in, err)
			}
			if err := r.Done(); !errors.Is(err, codec.ErrDecode) {
				t.Fatalf("Done after a failed read = %v, want the sticky ErrDecode", err)
			}
		})
	}
	if _, err := codec.AppendVarint(nil, codec.MaxVarint+1); !errors.Is(err, codec.ErrEncode) {
		t.Fatalf("AppendVarint(2^30) err = %v, want ErrEncode", err)
	}
	var w codec.Writer
	w.Varint(1 << 30)
	w.Uint8(7)
	if _, err := w.Finish(); !errors.Is(err, codec.ErrEncode) {
		t.Fatalf("Writer.Finish after Varint(2^30) = %v, want ErrEncode", err)
	}
}

func TestVarintBoundaries(t *testing.T) {
	for _, v := range []uint64{0, 1, 63, 64, 16383, 16384, codec.MaxVarint} {
		enc, err := codec.AppendVarint(nil, v)
		if err != nil {
			t.Fatalf("AppendVarint(%d): %v", v, err)
		}
		if len(enc) != codec.VarintLen(v) {
			t.Fatalf("AppendVarint(%d) is %d bytes, VarintLen says %d", v, len(enc), codec.VarintLen(v))
		}
		got, n, err := codec.ReadVarint(enc)
		if err != nil || uint64(got) != v || n != len(enc) {
			t.Fatalf("round trip %d: got %d, %d bytes, %v", v, got, n, err)
		}
	}
	if codec.VarintLen(codec.MaxVarint+1) != 0 {
		t.Fatal("VarintLen(2^30) should be 0")
	}
}

func TestWriterReaderRoundTrip(t *testing.T) {
	var w codec.Writer
	w.Uint8(0xab)
	w.Uint16(0xbeef)
	w.Uint32(0xdeadbeef)
	w.Uint64(0x0102030405060708)
	w.OpaqueV([]byte("hello"))
	w.StringV("label")
	w.Optional(true)
	w.Uint16(9)
	w.Optional(false)
	w.Raw([]byte{1, 2, 3, 4})
	w.VectorV(func(w *codec.Writer) {
		for i := range 3 {
			w.Uint32(uint32(i))
		}
	})
	w.OpaqueV(nil)
	enc, err := w.Finish()
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{0xab, 0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8,
		5, 'h', 'e', 'l', 'l', 'o', 5, 'l', 'a', 'b', 'e', 'l', 1, 0, 9, 0, 1, 2, 3, 4,
		12, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0}
	if !bytes.Equal(enc, want) {
		t.Fatalf("encoding:\n got  %x\n want %x", enc, want)
	}

	r := codec.NewReader(enc)
	u8, _ := r.Uint8()
	u16, _ := r.Uint16()
	u32, _ := r.Uint32()
	u64, _ := r.Uint64()
	op, _ := r.OpaqueV()
	s, _ := r.StringV()
	p1, _ := r.Optional()
	o16, _ := r.Uint16()
	p2, _ := r.Optional()
	raw, _ := r.Raw(4)
	var elems []uint32
	if err := r.ForEachV(func(r *codec.Reader) error {
		v, err := r.Uint32()
		elems = append(elems, v)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	empty, _ := r.OpaqueV()
	if err := r.Done(); err != nil {
		t.Fatal(err)
	}
	if u8 != 0xab || u16 != 0xbeef || u32 != 0xdeadbeef || u64 != 0x0102030405060708 ||
		string(op) != "hello" || s != "label" || !p1 || o16 != 9 || p2 ||
		!bytes.Equal(raw, []byte{1, 2, 3, 4}) || fmt.Sprint(elems) != "[0 1 2]" ||
		empty == nil || len(empty) != 0 {
		t.Fatalf("decoded values differ: %x %x %x %x %q %q %v %d %v %x %v %v", u8, u16, u32, u64, op, s, p1, o16, p2, raw, elems, empty)
	}
}

func TestReaderStrictness(t *testing.T) {
	r := codec.NewReader([]byte{0, 1})
	if _, err := r.Uint8(); err != nil {
		t.Fatal(err)
	}
	if err := r.Done(); !errors.Is(err, codec.ErrDecode) {
		t.Fatalf("Done with a trailing byte = %v, want ErrDecode", err)
	}

	if _, err := codec.NewReader([]byte{2}).Optional(); !errors.Is(err, codec.ErrDecode) {
		t.Fatalf("Optional(2) err = %v, want ErrDecode", err)
	}

	// An element that runs past the end of its vector is malformed even if
	// bytes follow the vector.
	r = codec.NewReader([]byte{3, 0, 0, 0, 0, 0})
	err := r.ForEachV(func(r *codec.Reader) error { _, err := r.Uint32(); return err })
	if !errors.Is(err, codec.ErrDecode) {
		t.Fatalf("ForEachV with an overrunning element err = %v, want ErrDecode", err)
	}

	// The sticky error survives: later reads fail too.
	if _, err := r.Uint8(); !errors.Is(err, codec.ErrDecode) {
		t.Fatalf("read after failure err = %v, want ErrDecode", err)
	}

	// A decoder that consumes nothing would loop forever; it is rejected.
	r = codec.NewReader([]byte{1, 0})
	if err := r.ForEachV(func(*codec.Reader) error { return nil }); !errors.Is(err, codec.ErrDecode) {
		t.Fatalf("ForEachV with a non-consuming decoder err = %v, want ErrDecode", err)
	}

	if _, err := codec.NewReader([]byte{1, 2}).Raw(3); !errors.Is(err, codec.ErrDecode) {
		t.Fatalf("Raw past end err = %v, want ErrDecode", err)
	}
	r = codec.NewReader([]byte{0x40, 0x01})
	if _, err := r.OpaqueV(); !errors.Is(err, codec.ErrDecode) {
		t.Fatalf("OpaqueV with non-minimal length err = %v, want ErrDecode", err)
	}
}

func TestReaderCopies(t *testing.T) {
	in := []byte{2, 'a', 'b', 'c', 'd'}
	r := codec.NewReader(in)
	op, _ := r.OpaqueV()
	raw, _ := r.Raw(2)
	in[1], in[3] = 'x', 'y'
	if string(op) != "ab" || string(raw) != "cd" {
		t.Fatalf("decoded slices alias the input: %q %q", op, raw)
	}
}

func TestFailSetsStickyError(t *testing.T) {
	r := codec.NewReader([]byte{5})
	if err := r.Failf("enum value %d out of range", 5); !errors.Is(err, codec.ErrDecode) {
		t.Fatalf("Failf = %v", err)
	}
	if err := r.Done(); !errors.Is(err, codec.ErrDecode) {
		t.Fatalf("Done after Failf = %v", err)
	}
	var w codec.Writer
	sentinel := errors.New("bad struct")
	w.Fail(sentinel)
	w.Uint8(1)
	if _, err := w.Finish(); !errors.Is(err, sentinel) || w.Len() != 0 {
		t.Fatalf("Writer.Fail: err %v, len %d", err, w.Len())
	}
}

// FuzzVarint checks that a varint decode followed by an encode gives back
// exactly the bytes consumed (so only minimal encodings are accepted), and
// that an opaque<V> round trip through Reader and Writer is the identity.
func FuzzVarint(f *testing.F) {
	for _, s := range [][]byte{{0}, {0x3f}, {0x40, 0x40}, {0x7f, 0xff}, {0x80, 0, 0x40, 0}, {0xbf, 0xff, 0xff, 0xff}, {0x40, 0}, {0xc0}, {2, 'h', 'i'}} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		v, n, err := codec.ReadVarint(in)
		if err != nil {
			if !errors.Is(err, codec.ErrDecode) {
				t.Fatalf("ReadVarint error does not wrap ErrDecode: %v", err)
			}
		} else {
			enc, err := codec.AppendVarint(nil, uint64(v))
			if err != nil {
				t.Fatalf("re-encoding %d: %v", v, err)
			}
			if !bytes.Equal(enc, in[:n]) {
				t.Fatalf("varint %x decoded to %d which encodes as %x", in[:n], v, enc)
			}
		}

		r := codec.NewReader(in)
		op, err := r.OpaqueV()
		if err != nil {
			return
		}
		var w codec.Writer
		w.OpaqueV(op)
		w.Raw(in[r.Offset():])
		out, err := w.Finish()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, in) {
			t.Fatalf("opaque<V> round trip:\n in  %x\n out %x", in, out)
		}
	})
}

type fuzzElem struct {
	value   []byte // nil when absent
	present bool
	tag     uint16
}

// decodeFuzzStruct decodes a small schema exercising every Reader feature:
// uint8 version, a <V> vector of { optional<opaque<V>>, uint16 }, uint32,
// uint64, opaque fixed[2].
func decodeFuzzStruct(in []byte) (v uint8, elems []fuzzElem, a uint32, b uint64, fixed []byte, err error) {
	r := codec.NewReader(in)
	v, _ = r.Uint8()
	err = r.ForEachV(func(r *codec.Reader) error {
		var e fuzzElem
		var err error
		if e.present, err = r.Optional(); err != nil {
			return err
		}
		if e.present {
			if e.value, err = r.OpaqueV(); err != nil {
				return err
			}
		}
		e.tag, err = r.Uint16()
		elems = append(elems, e)
		return err
	})
	if err != nil {
		return v, elems, a, b, fixed, err
	}
	a, _ = r.Uint32()
	b, _ = r.Uint64()
	fixed, _ = r.Raw(2)
	return v, elems, a, b, fixed, r.Done()
}

// FuzzReader checks that whenever the strict Reader accepts an input for a
// schema, the Writer re-encodes the decoded values to exactly that input:
// there is one encoding per value.
func FuzzReader(f *testing.F) {
	var w codec.Writer
	w.Uint8(1)
	w.VectorV(func(w *codec.Writer) {
		w.Optional(true)
		w.OpaqueV([]byte("abc"))
		w.Uint16(7)
		w.Optional(false)
		w.Uint16(8)
	})
	w.Uint32(9)
	w.Uint64(10)
	w.Raw([]byte{1, 2})
	f.Add(w.Bytes())
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		v, elems, a, b, fixed, err := decodeFuzzStruct(in)
		if err != nil {
			if !errors.Is(err, codec.ErrDecode) {
				t.Fatalf("decode error does not wrap ErrDecode: %v", err)
			}
			return
		}
		var w codec.Writer
		w.Uint8(v)
		w.VectorV(func(w *codec.Writer) {
			for _, e := range elems {
				w.Optional(e.present)
				if e.present {
					w.OpaqueV(e.value)
				}
				w.Uint16(e.tag)
			}
		})
		w.Uint32(a)
		w.Uint64(b)
		w.Raw(fixed)
		out, err := w.Finish()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, in) {
			t.Fatalf("round trip:\n in  %x\n out %x", in, out)
		}
	})
}

// TestVectorVLengthPrefix holds VectorV, which writes the content in place
// and moves it up when the length needs more than one byte, to OpaqueV of
// the same content: at every length-prefix size and its boundaries, nested,
// between other writes, and when the content fails to encode.
func TestVectorVLengthPrefix(t *testing.T) {
	for _, n := range []int{0, 1, 63, 64, 65, 300, 16383, 16384, 16385, 100_000} {
		content := make([]byte, n)
		for i := range content {
			content[i] = byte(i*7 + 1)
		}
		var got, want codec.Writer
		got.Uint16(0xa1a2)
		got.VectorV(func(w *codec.Writer) {
			w.Raw(content[:n/2])
			w.VectorV(func(w *codec.Writer) { w.Raw(content[n/2:]) })
		})
		got.Uint8(0xb3)
		var inner codec.Writer
		inner.Raw(content[:n/2])
		inner.OpaqueV(content[n/2:])
		want.Uint16(0xa1a2)
		want.OpaqueV(inner.Bytes())
		want.Uint8(0xb3)
		g, err := got.Finish()
		if err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		if !bytes.Equal(g, want.Bytes()) {
			t.Fatalf("n=%d: VectorV wrote %d bytes unlike OpaqueV's %d (first 8: %x, want %x)", n, len(g), want.Len(), g[:min(8, len(g))], want.Bytes()[:min(8, want.Len())])
		}
		r := codec.NewReader(g)
		r.Uint16()
		sub, err := r.VectorV()
		if err != nil {
			t.Fatalf("n=%d: read back: %v", n, err)
		}
		first, _ := sub.Raw(n / 2)
		second, err := sub.OpaqueV()
		if err != nil || !bytes.Equal(first, content[:n/2]) || !bytes.Equal(second, content[n/2:]) || sub.Done() != nil {
			t.Fatalf("n=%d: content read back differs (err %v)", n, err)
		}
	}

	var w codec.Writer
	sentinel := errors.New("bad element")
	w.VectorV(func(w *codec.Writer) {
		w.Raw(make([]byte, 100))
		w.Fail(sentinel)
	})
	w.Uint8(1)
	if _, err := w.Finish(); !errors.Is(err, sentinel) {
		t.Fatalf("VectorV with a failing element: err %v", err)
	}
}
