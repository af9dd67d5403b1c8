// Package bytedelta encodes one byte string as a delta from another: the
// runs it shares with the base, by offset and length, and the bytes it
// does not. A group's MLS state changes in a few places per commit (the
// committer's path, the epoch's secrets) while most of it, the ratchet
// tree, stays as it was: at 1,000 members a processed commit's state of
// 176 KiB is a delta of about 2 KiB from the state before it.
//
// Diff finds shared runs by indexing the base's aligned 32-byte blocks
// and looking each position of the target up while it is unmatched; a
// match is then extended both ways byte by byte. It is exact, not
// minimal: Apply of its output to the same base always gives the target.
// Apply checks every length and offset, so a malformed or truncated
// delta, or one meant for a longer base, is an error, never a panic.
//
// Diff is deterministic, and its output is stored: read models from
// schema 5 keep states as deltas and compare by digest, so a rebuild
// must write the bytes the live read model wrote. Changing what Diff
// returns for the same inputs is a change of the read model's format
// (TestDiffOutputIsStable guards it).
package bytedelta

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
)

// ErrMalformed means a delta cannot be applied to the base it was given:
// it is truncated, names bytes the base does not have, or does not add up
// to the length it declares.
var ErrMalformed = errors.New("bytedelta: malformed delta")

// format is the first byte of every delta, so that another encoding can
// follow without ambiguity.
const format = 1

// block is the length of the base's indexed blocks and the shortest run
// Diff looks for (a found run grows past it both ways).
const block = 32

// MaxTarget bounds the length a delta may declare.
const MaxTarget = 1 << 30

// Diff returns a delta that Apply turns base into target with.
func Diff(base, target []byte) []byte {
	out := make([]byte, 0, 64)
	out = append(out, format)
	out = binary.AppendUvarint(out, uint64(len(target)))
	tableBits := uint(4)
	for 1<<tableBits < 2*(len(base)/block+1) {
		tableBits++
	}
	table := make([]int32, 1<<tableBits)
	for i := range table {
		table[i] = -1
	}
	for off := 0; off+block <= len(base); off += block {
		if h := hash(base[off:], tableBits); table[h] < 0 {
			table[h] = int32(off)
		}
	}
	lit := 0 // the first target byte not yet in out
	for i := 0; i+block <= len(target); {
		o := int(table[hash(target[i:], tableBits)])
		if o < 0 || string(base[o:o+block]) != string(target[i:i+block]) {
			i++
			continue
		}
		// Extend back over the pending literal, then forward: a commit
		// leaves most of a state in place, so the forward run is usually
		// most of the state and is compared a word at a time.
		back := commonSuffix(target[lit:i], base[:o])
		s, bs := i-back, o-back
		fwd := commonPrefix(target[i+block:], base[o+block:])
		e := i + block + fwd
		out = appendLiteral(out, target[lit:s])
		out = binary.AppendUvarint(out, uint64(e-s)<<1)
		out = binary.AppendUvarint(out, uint64(bs))
		i, lit = e, e
	}
	return appendLiteral(out, target[lit:])
}

// commonPrefix returns the length of the longest common prefix of a and b.
func commonPrefix(a, b []byte) int {
	n := min(len(a), len(b))
	i := 0
	for ; i+8 <= n; i += 8 {
		if x := binary.LittleEndian.Uint64(a[i:]) ^ binary.LittleEndian.Uint64(b[i:]); x != 0 {
			return i + bits.TrailingZeros64(x)/8
		}
	}
	for i < n && a[i] == b[i] {
		i++
	}
	return i
}

// commonSuffix returns the length of the longest common suffix of a and b.
func commonSuffix(a, b []byte) int {
	n := min(len(a), len(b))
	a, b = a[len(a)-n:], b[len(b)-n:]
	i := 0 // bytes matched from the end
	for ; i+8 <= n; i += 8 {
		if x := binary.BigEndian.Uint64(a[n-i-8:]) ^ binary.BigEndian.Uint64(b[n-i-8:]); x != 0 {
			return i + bits.TrailingZeros64(x)/8
		}
	}
	for i < n && a[n-i-1] == b[n-i-1] {
		i++
	}
	return i
}

// hash maps the 8 bytes at the start of b to bits bits.
func hash(b []byte, bits uint) uint32 {
	return uint32((binary.LittleEndian.Uint64(b) * 0x9E3779B97F4A7C15) >> (64 - bits))
}

// appendLiteral appends an instruction that copies lit from the delta.
func appendLiteral(out, lit []byte) []byte {
	if len(lit) == 0 {
		return out
	}
	out = binary.AppendUvarint(out, uint64(len(lit))<<1|1)
	return append(out, lit...)
}

// Apply returns the target that delta encodes against base. Errors wrap
// ErrMalformed and say where the delta went wrong; they show no bytes of
// either.
func Apply(base, delta []byte) ([]byte, error) {
	if len(delta) == 0 || delta[0] != format {
		return nil, fmt.Errorf("%w: unknown format", ErrMalformed)
	}
	d := delta[1:]
	n, k := binary.Uvarint(d)
	if k <= 0 || n > MaxTarget {
		return nil, fmt.Errorf("%w: bad target length", ErrMalformed)
	}
	d = d[k:]
	// Not more up front than the base and the delta could make without
	// repeating a run: a forged length costs no memory until it is met.
	out := make([]byte, 0, min(n, uint64(len(base)+len(d))))
	for len(d) > 0 {
		op, k := binary.Uvarint(d)
		if k <= 0 {
			return nil, fmt.Errorf("%w: bad instruction at delta byte %d", ErrMalformed, len(delta)-len(d))
		}
		d = d[k:]
		l := op >> 1
		if l == 0 || l > n-uint64(len(out)) {
			return nil, fmt.Errorf("%w: a run of %d bytes at target byte %d of %d", ErrMalformed, l, len(out), n)
		}
		if op&1 == 1 {
			if l > uint64(len(d)) {
				return nil, fmt.Errorf("%w: literal of %d bytes, %d left in the delta", ErrMalformed, l, len(d))
			}
			out = append(out, d[:l]...)
			d = d[l:]
			continue
		}
		off, k := binary.Uvarint(d)
		if k <= 0 {
			return nil, fmt.Errorf("%w: bad offset at delta byte %d", ErrMalformed, len(delta)-len(d))
		}
		d = d[k:]
		if off > uint64(len(base)) || l > uint64(len(base))-off {
			return nil, fmt.Errorf("%w: copy of %d bytes at base offset %d, the base has %d", ErrMalformed, l, off, len(base))
		}
		out = append(out, base[off:off+l]...)
	}
	if uint64(len(out)) != n {
		return nil, fmt.Errorf("%w: %d bytes of the %d declared", ErrMalformed, len(out), n)
	}
	return out, nil
}
