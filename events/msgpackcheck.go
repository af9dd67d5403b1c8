package events

import (
	"errors"
	"fmt"
)

// maxMsgpackDepth bounds container nesting; event bodies nest at most three
// levels, and the msgpack decoder recurses once per level.
const maxMsgpackDepth = 32

var errMsgpackTruncated = errors.New("msgpack value truncated")

// checkMsgpack verifies that data is exactly one well-formed msgpack value
// whose declared lengths fit in data, before it reaches the msgpack
// decoder. The decoder allocates a declared str/bin length up front (up to
// 4 GiB for a 5-byte header), so without this check a few hostile bytes
// could exhaust memory. Each array/map element takes at least one byte, so
// counts are bounded by the bytes left too.
func checkMsgpack(data []byte) error {
	end, err := msgpackValueEnd(data, 0)
	if err != nil {
		return err
	}
	if end != len(data) {
		return fmt.Errorf("%d trailing bytes", len(data)-end)
	}
	return nil
}

// msgpackValueEnd checks the one msgpack value that starts at data[pos] as
// checkMsgpack does, and returns the offset just past it.
func msgpackValueEnd(data []byte, pos int) (int, error) {
	stack := []int{1} // values still to read at each open level
	readLen := func(n int) (int, error) {
		if len(data)-pos < n {
			return 0, errMsgpackTruncated
		}
		var v uint64
		for _, b := range data[pos : pos+n] {
			v = v<<8 | uint64(b)
		}
		pos += n
		if v > uint64(len(data)) { // cannot fit; also keeps int conversion safe
			return 0, errMsgpackTruncated
		}
		return int(v), nil
	}
	for len(stack) > 0 {
		top := len(stack) - 1
		if stack[top] == 0 {
			stack = stack[:top]
			continue
		}
		stack[top]--
		if pos >= len(data) {
			return 0, errMsgpackTruncated
		}
		c := data[pos]
		pos++
		var size, children int
		var err error
		switch {
		case c <= 0x7f, c >= 0xe0, c == 0xc0, c == 0xc2, c == 0xc3:
			// fixint, nil, bool: no payload
		case c <= 0x8f:
			children = 2 * int(c&0x0f)
		case c <= 0x9f:
			children = int(c & 0x0f)
		case c <= 0xbf:
			size = int(c & 0x1f)
		default:
			switch c {
			case 0xc4, 0xd9: // bin8, str8
				size, err = readLen(1)
			case 0xc5, 0xda: // bin16, str16
				size, err = readLen(2)
			case 0xc6, 0xdb: // bin32, str32
				size, err = readLen(4)
			case 0xc7: // ext8: length, then a type byte
				size, err = readLen(1)
				size++
			case 0xc8:
				size, err = readLen(2)
				size++
			case 0xc9:
				size, err = readLen(4)
				size++
			case 0xca, 0xce, 0xd2: // float32, uint32, int32
				size = 4
			case 0xcb, 0xcf, 0xd3: // float64, uint64, int64
				size = 8
			case 0xcc, 0xd0:
				size = 1
			case 0xcd, 0xd1:
				size = 2
			case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext 1, 2, 4, 8, 16 plus a type byte
				size = 1 + 1<<(c-0xd4)
			case 0xdc: // array16
				children, err = readLen(2)
			case 0xdd: // array32
				children, err = readLen(4)
			case 0xde: // map16
				children, err = readLen(2)
				children *= 2
			case 0xdf: // map32
				children, err = readLen(4)
				children *= 2
			default: // 0xc1 is never used
				return 0, fmt.Errorf("msgpack: invalid code 0x%02x at offset %d", c, pos-1)
			}
		}
		if err != nil {
			return 0, err
		}
		if size > len(data)-pos {
			return 0, errMsgpackTruncated
		}
		pos += size
		if children > 0 {
			if children > len(data)-pos {
				return 0, errMsgpackTruncated
			}
			if len(stack) > maxMsgpackDepth {
				return 0, fmt.Errorf("msgpack: nested deeper than %d", maxMsgpackDepth)
			}
			stack = append(stack, children)
		}
	}
	return pos, nil
}
