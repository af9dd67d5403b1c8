package events

import (
	"bytes"
	"runtime"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

func TestCheckMsgpackAcceptsEncodedEvents(t *testing.T) {
	for k, e := range samples(testInst) {
		b, err := MarshalEvent(e)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkMsgpack(b); err != nil {
			t.Errorf("%s: %v", k, err)
		}
	}
	// Every msgpack type the encoder can produce.
	b, err := msgpack.Marshal([]any{nil, true, false, 1, -1, 300, -300, 70000, -70000, int64(1) << 40, uint64(1) << 63,
		float32(1.5), 2.5, "s", strings.Repeat("x", 40), strings.Repeat("y", 300), strings.Repeat("z", 70000),
		[]byte("b"), bytes.Repeat([]byte{1}, 300), bytes.Repeat([]byte{2}, 70000), make([]int, 20), make([]int, 70000),
		map[string]int{"a": 1}, testTime, msgpack.RawMessage{0xd4, 1, 2}})
	if err != nil {
		t.Fatal(err)
	}
	if err := checkMsgpack(b); err != nil {
		t.Fatal(err)
	}
}

func TestCheckMsgpackRefusesHostileLengths(t *testing.T) {
	for name, in := range map[string][]byte{
		"str32 of 4 GiB": {0xdb, 0xff, 0xff, 0xff, 0xff, 'a'},
		"bin32 of 4 GiB": {0xc6, 0xff, 0xff, 0xff, 0xff, 'a'},
		"array32 huge":   {0xdd, 0xff, 0xff, 0xff, 0xff, 0},
		"map32 huge":     {0xdf, 0x7f, 0xff, 0xff, 0xff, 0, 0},
		"ext32 huge":     {0xc9, 0xff, 0xff, 0xff, 0xff, 1},
		"too deep":       bytes.Repeat([]byte{0x91}, maxMsgpackDepth+2),
		"unused code":    {0xc1},
		"empty":          {},
		"trailing":       {0x01, 0x02},
		"short fixstr":   {0xa5, 'a'},
		"short uint64":   {0xcf, 1, 2},
	} {
		if err := checkMsgpack(in); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// A few hostile bytes must not make the decoder allocate gigabytes (found
// by FuzzDecodeBody: msgpack allocates a declared length up front).
func TestDecodeHostileLengthAllocatesLittle(t *testing.T) {
	h := eventHeader{Aggregate: Aggregate{Installation: testInst, Type: AggGroup, ID: "g"}, Position: 1, Time: testTime}
	in := []byte{0x81, 0xa8, 'g', 'r', 'o', 'u', 'p', '_', 'i', 'd', 0xc6, 0xf0, 0, 0, 0, 1}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := decodeBody(KindGroupCreated, 1, in, h)
	runtime.ReadMemStats(&after)
	if err == nil {
		t.Fatal("decoded a truncated body")
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
		t.Fatalf("decoding %d hostile bytes allocated %d bytes", len(in), n)
	}
}
