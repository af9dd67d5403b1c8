package mls

import (
	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/codec"
)

// wireStruct is implemented by every structure with an MLS encoding.
type wireStruct interface {
	marshal(w *codec.Writer)
	unmarshal(r *codec.Reader) error
}

// marshalWire encodes v, reporting values MLS cannot represent.
func marshalWire(v wireStruct) ([]byte, error) {
	var w codec.Writer
	v.marshal(&w)
	return w.Finish()
}

// unmarshalWire decodes b into v strictly: the whole input must be consumed.
func unmarshalWire(b []byte, v wireStruct) error {
	r := codec.NewReader(b)
	if err := v.unmarshal(r); err != nil {
		return err
	}
	return r.Done()
}

// readList decodes a <V> vector whose elements are read by read.
func readList[T any](r *codec.Reader, read func(r *codec.Reader) (T, error)) []T {
	var out []T
	_ = r.ForEachV(func(sub *codec.Reader) error {
		v, err := read(sub)
		if err != nil {
			return err
		}
		out = append(out, v)
		return nil
	})
	return out
}

// readStructList decodes a <V> vector of structures.
func readStructList[T any, P interface {
	*T
	wireStruct
}](r *codec.Reader) []T {
	return readList(r, func(sub *codec.Reader) (T, error) {
		var v T
		err := P(&v).unmarshal(sub)
		return v, err
	})
}

// writeStructList encodes a <V> vector of structures.
func writeStructList[T any, P interface {
	*T
	wireStruct
}](w *codec.Writer, list []T) {
	w.VectorV(func(w *codec.Writer) {
		for i := range list {
			P(&list[i]).marshal(w)
		}
	})
}

func readOpaque(r *codec.Reader) ([]byte, error) { return r.OpaqueV() }

func readUint16List[T ~uint16](r *codec.Reader) []T {
	return readList(r, func(sub *codec.Reader) (T, error) {
		v, err := sub.Uint16()
		return T(v), err
	})
}

func writeUint16List[T ~uint16](w *codec.Writer, list []T) {
	w.VectorV(func(w *codec.Writer) {
		for _, v := range list {
			w.Uint16(uint16(v))
		}
	})
}

func readSuite(r *codec.Reader) ciphersuite.Suite {
	v, _ := r.Uint16()
	return ciphersuite.Suite(v)
}
