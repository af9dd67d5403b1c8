package eventlog

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
)

func TestRoundTrip(t *testing.T) {
	l, _ := newLog(t)
	g1, g2, gb := group(instA, "aa01"), group(instA, "aa02"), group(instB, "bb01")
	want := map[uint64]events.Event{}
	add := func(expected uint64, evs ...events.Event) {
		for i, a := range mustAppend(t, l, expected, evs...) {
			if a.Position != expected+uint64(i)+1 || a.Duplicate {
				t.Fatalf("appended %+v, want position %d, not duplicate", a, expected+uint64(i)+1)
			}
			if n := storedSize(t, l, a.Seq); n != a.Size {
				t.Fatalf("appended %+v: the stream stores %d bytes at seq %d", a, n, a.Seq)
			}
			want[a.Seq] = evs[i]
		}
	}
	add(0, msg(g1, 1, "a1"))
	add(0, msg(gb, 1, "b1"))
	add(0, msg(g2, 1, "c1"), msg(g2, 2, "c2"), msg(g2, 3, "c3"))
	add(1, msg(g1, 2, "a2"))
	add(1, msg(gb, 2, "b2"))

	recs := readAll(t, l, instA, 0)
	var got []string
	var last uint64
	for _, r := range recs {
		if r.Seq <= last {
			t.Fatalf("sequences not increasing: %d after %d", r.Seq, last)
		}
		last = r.Seq
		sameEvent(t, r.Event, want[r.Seq])
		if s, _ := l.Subject(r.Event.Aggregate); s != r.Subject {
			t.Fatalf("record subject %s, aggregate maps to %s", r.Subject, s)
		}
		got = append(got, content(r.Event))
	}
	if strings.Join(got, " ") != "a1 c1 c2 c3 a2" {
		t.Fatalf("installation A read %v", got)
	}
	if recs := readAll(t, l, instB, 0); len(recs) != 2 || content(recs[0].Event) != "b1" || content(recs[1].Event) != "b2" {
		t.Fatalf("installation B read %d records", len(recs))
	}
	// From a checkpoint: only what follows it.
	from := recs[2].Seq // c2
	tail := readAll(t, l, instA, from)
	if len(tail) != 3 || content(tail[0].Event) != "c2" {
		t.Fatalf("read from seq %d gave %d records", from, len(tail))
	}
	// Past the end: nothing, and no waiting.
	if recs := readAll(t, l, instA, last+100); len(recs) != 0 {
		t.Fatalf("read past the end gave %d records", len(recs))
	}
	// An installation with no events.
	if recs := readAll(t, l, "inst-nobody", 0); len(recs) != 0 {
		t.Fatalf("empty installation gave %d records", len(recs))
	}
	if seq, err := l.LastSeq(context.Background(), instA); err != nil || seq != last {
		t.Fatalf("LastSeq = %d, %v; want %d", seq, err, last)
	}
}

func TestSubjectsArePseudonymous(t *testing.T) {
	l, _ := newLog(t)
	agg := group(instA, "cafe01")
	res := mustAppend(t, l, 0, msg(agg, 1, "plaintext-content"))
	subj := res[0].Subject
	parts := strings.Split(subj, ".")
	if len(parts) != 4 || parts[0] != DefaultSubjectPrefix || parts[2] != string(events.AggGroup) {
		t.Fatalf("subject %q, want %s.<inst>.group.<agg>", subj, DefaultSubjectPrefix)
	}
	for _, clear := range []string{string(instA), agg.ID} {
		if strings.Contains(subj, clear) {
			t.Fatalf("subject %q contains %q in clear", subj, clear)
		}
	}
	m := rawGet(t, l, res[0].Seq)
	for k, v := range m.Header {
		for _, clear := range []string{string(instA), agg.ID, "plaintext-content"} {
			if strings.Contains(strings.Join(v, ","), clear) && k != "Nats-Expected-Last-Subject-Sequence" {
				t.Fatalf("header %s=%v contains %q", k, v, clear)
			}
		}
	}
	// Another key ring (another deployment) gives other subjects.
	other := openLog(t, Config{NATSURL: l.cfg.NATSURL, Stream: "OTHER", SubjectPrefix: "other"}, keyring(t, 1, 0x22))
	s2, err := other.Subject(agg)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Split(s2, ".")[1] == parts[1] || strings.Split(s2, ".")[3] == parts[3] {
		t.Fatalf("pseudonyms do not depend on the key: %s vs %s", s2, subj)
	}
}

func TestEmbeddedDefault(t *testing.T) {
	for _, inProcess := range []bool{false, true} {
		name := map[bool]string{false: "loopback", true: "in-process"}[inProcess]
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			r := keyring(t, 1, 0x11)
			// Under -race on two loaded cores, the reopened server's first
			// answers (it recovers a stream with a 3 MiB message) took
			// longer than the default 10 s once: what is tested here is
			// the embedded server, not a timeout.
			cfg := Config{DataDir: dir, EmbeddedInProcess: inProcess, RequestTimeout: time.Minute}
			l, err := Open(context.Background(), cfg, r)
			if err != nil {
				t.Fatal(err)
			}
			if (l.ClientURL() == "") != inProcess {
				t.Fatalf("ClientURL %q with in-process %v", l.ClientURL(), inProcess)
			}
			if !l.AtomicBatches() {
				t.Fatal("embedded server should support atomic batches")
			}
			agg := group(instA, "e1")
			mustAppend(t, l, 0, msg(agg, 1, "one"), msg(agg, 2, "two"))
			// Events past nats-server's default max_payload (1 MiB), as a
			// large group's state and Welcome make them, are stored; one
			// past EmbeddedMaxPayload is refused by name.
			big := group(instA, "e-big")
			mustAppend(t, l, 0, msg(big, 1, strings.Repeat("s", 3<<20)))
			if _, err := l.Append(context.Background(), 1, msg(big, 2, strings.Repeat("s", EmbeddedMaxPayload))); !errors.Is(err, ErrEventTooLarge) {
				t.Fatalf("an event over %d bytes: %v, want ErrEventTooLarge", EmbeddedMaxPayload, err)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if err := l.Close(); err != nil {
				t.Fatalf("second close: %v", err)
			}
			if _, err := l.Append(context.Background(), 2, msg(agg, 3, "x")); !errors.Is(err, ErrClosed) {
				t.Fatalf("append after close: %v, want ErrClosed", err)
			}
			// The store survives: reopen and read it back, append more.
			l2 := openLog(t, cfg, r)
			mustAppend(t, l2, 2, msg(agg, 3, "three"))
			recs := readAll(t, l2, instA, 0)
			if len(recs) != 4 || content(recs[3].Event) != "three" || len(content(recs[2].Event)) != 3<<20 {
				t.Fatalf("after reopen read %d records", len(recs))
			}
			// File storage under DataDir, as configured.
			if fi, err := os.Stat(filepath.Join(dir, "jetstream", "$G", "streams", DefaultStream)); err != nil || !fi.IsDir() {
				t.Fatalf("stream directory under DataDir: %v", err)
			}
		})
	}
}

func TestAppendValidation(t *testing.T) {
	l, _ := newLog(t)
	ctx := context.Background()
	g1, g2 := group(instA, "v1"), group(instA, "v2")
	cases := map[string][]events.Event{
		"no events":         nil,
		"two aggregates":    {msg(g1, 1, "a"), msg(g2, 2, "b")},
		"wrong position":    {msg(g1, 5, "a")},
		"positions skip":    {msg(g1, 1, "a"), msg(g1, 3, "b")},
		"invalid aggregate": {msg(events.Aggregate{Installation: "bad id", Type: events.AggGroup, ID: "x"}, 1, "a")},
	}
	for name, evs := range cases {
		if _, err := l.Append(ctx, 0, evs...); !errors.Is(err, ErrInvalidAppend) {
			t.Errorf("%s: got %v, want ErrInvalidAppend", name, err)
		}
	}
	if n := streamMsgs(t, l); n != 0 {
		t.Fatalf("invalid appends stored %d messages", n)
	}
	// Position 0 is filled in.
	e := msg(g1, 0, "auto")
	if res := mustAppend(t, l, 0, e); res[0].Position != 1 {
		t.Fatalf("filled position %d", res[0].Position)
	}
	// An expected position beyond the aggregate's end is no conflict (no
	// other writer moves a tail back): the writer holds events the stream
	// does not.
	if _, err := l.Append(ctx, 7, msg(g1, 8, "far")); !errors.Is(err, ErrMissingEvent) || errors.Is(err, ErrConflict) {
		t.Fatalf("append past the end: %v, want ErrMissingEvent", err)
	}
}

// storedSize is the size of the message the stream stores at seq.
func storedSize(t *testing.T, l *Log, seq uint64) int {
	t.Helper()
	m, err := l.getMsg(context.Background(), seq)
	if err != nil {
		t.Fatalf("get seq %d: %v", seq, err)
	}
	return len(m.Data)
}

func TestIdempotentRetry(t *testing.T) {
	l, srv := newLog(t)
	agg := group(instA, "idem")
	first := mustAppend(t, l, 0, msg(agg, 1, "one"))
	batch := []events.Event{msg(agg, 2, "two"), msg(agg, 3, "three"), msg(agg, 4, "four")}
	firstBatch := mustAppend(t, l, 1, batch...)

	check := func(name string, l *Log, expected uint64, want []Appended, evs ...events.Event) {
		t.Helper()
		got := mustAppend(t, l, expected, evs...)
		for i := range got {
			if got[i].Seq != want[i].Seq || got[i].Position != want[i].Position || !got[i].Duplicate || got[i].Size != want[i].Size {
				t.Fatalf("%s: retry gave %+v, want seq %d position %d size %d duplicate", name, got[i], want[i].Seq, want[i].Position, want[i].Size)
			}
		}
	}
	// The same appends again, on the same Log and on a fresh one (a
	// restarted client with no cache), after later events were appended.
	check("single, same log", l, 0, first, msg(agg, 1, "one"))
	check("batch, same log", l, 1, firstBatch, batch...)
	fresh := openLog(t, testConfig(srv), keyring(t, 1, 0x11))
	check("single, fresh log", fresh, 0, first, msg(agg, 1, "one"))
	check("batch, fresh log", fresh, 1, firstBatch, batch...)
	if n := streamMsgs(t, l); n != 4 {
		t.Fatalf("stream holds %d messages after retries, want 4", n)
	}

	// A zero Time is not part of the identity: the retry matches.
	e := msg(agg, 5, "five")
	e.Time = time.Time{}
	five := mustAppend(t, l, 4, e)
	check("zero time", fresh, 4, five, e)

	// The same position with other content is not a retry but a conflict.
	if _, err := fresh.Append(context.Background(), 4, msg(agg, 5, "other")); !errors.Is(err, ErrConflict) {
		t.Fatalf("different event at a taken position: %v, want ErrConflict", err)
	}
	if n := streamMsgs(t, l); n != 5 {
		t.Fatalf("stream holds %d messages, want 5", n)
	}
	recs := readAll(t, l, instA, 0)
	if len(recs) != 5 {
		t.Fatalf("read %d records, want 5", len(recs))
	}
}

func TestReadLeavesNoConsumerBehind(t *testing.T) {
	l, _ := newLog(t)
	mustAppend(t, l, 0, msg(group(instA, "c"), 1, "one"))
	for range 5 {
		if recs := readAll(t, l, instA, 0); len(recs) != 1 {
			t.Fatalf("read %d events, want 1", len(recs))
		}
	}
	info, err := l.stream.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Consumers != 0 {
		t.Fatalf("%d consumers left on the stream after finished reads", info.State.Consumers)
	}
}

// TestRefusalAtExpectedPositionIsRetried: when the server refuses an
// append's expected sequence but the stream shows the aggregate exactly
// where the append expects it, the refusal is not a conflict: the append
// is retried with the stream's sequence. (On a cluster the leader refuses a
// check on a subject whose previous message is still being replicated;
// here a stale cached sequence makes the server refuse the same way.) Both
// the synchronous and the pipelined path; a real conflict is still one.
func TestRefusalAtExpectedPositionIsRetried(t *testing.T) {
	l, _ := newLog(t)
	ctx := context.Background()
	agg := group(instA, "stale")
	subject, err := l.Subject(agg)
	if err != nil {
		t.Fatal(err)
	}
	first := mustAppend(t, l, 0, msg(agg, 1, "one"))
	poison := func(pos uint64) {
		l.mu.Lock()
		l.tails[subject] = tail{seq: first[0].Seq + 1000, pos: pos}
		l.mu.Unlock()
	}

	poison(1)
	res, err := l.Append(ctx, 1, msg(agg, 2, "two"))
	if err != nil || len(res) != 1 || res[0].Position != 2 || res[0].Duplicate {
		t.Fatalf("append after a refused stale sequence: %+v, %v; want position 2 appended", res, err)
	}

	poison(2)
	bulk, err := l.AppendBulk(ctx, []Transition{{Expected: 2, Events: []events.Event{msg(agg, 3, "three"), msg(agg, 4, "four")}}})
	if err != nil || len(bulk) != 1 || len(bulk[0]) != 2 || bulk[0][1].Position != 4 {
		t.Fatalf("bulk append after a refused stale sequence: %+v, %v; want positions 3 and 4", bulk, err)
	}

	// A taken position stays a conflict, whatever the cache says.
	poison(4)
	if _, err := l.Append(ctx, 3, msg(agg, 4, "other")); !errors.Is(err, ErrConflict) {
		t.Fatalf("append at a taken position: %v, want ErrConflict", err)
	}
	recs := readAll(t, l, instA, 0)
	var got []string
	for _, r := range recs {
		got = append(got, content(r.Event))
	}
	if strings.Join(got, " ") != "one two three four" {
		t.Fatalf("stream holds %v, want one two three four", got)
	}
}
