package eventlog

import (
	"bytes"
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/natstest"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	instA events.InstallationID = "inst-alice"
	instB events.InstallationID = "inst-bob"
)

var baseTime = time.Date(2026, 11, 23, 3, 0, 0, 0, time.UTC)

func rootKey(t testing.TB, fill byte) events.RootKey {
	t.Helper()
	k, err := events.NewRootKey(bytes.Repeat([]byte{fill}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func keyring(t testing.TB, id events.KeyID, fill byte) *events.Keyring {
	t.Helper()
	r, err := events.NewKeyring(id, rootKey(t, fill))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// testConfig points a Log at a natstest server.
func testConfig(srv *natstest.Server) Config {
	return Config{NATSURL: srv.URL(), RequestTimeout: 5 * time.Second, ReconnectWait: 20 * time.Millisecond}
}

func openLog(t testing.TB, cfg Config, r *events.Keyring) *Log {
	t.Helper()
	l, err := Open(context.Background(), cfg, r)
	if err != nil {
		t.Fatalf("open log: %v", err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// newLog starts a server and opens a Log on it with key ring {1: 0x11}.
func newLog(t testing.TB) (*Log, *natstest.Server) {
	t.Helper()
	srv := natstest.Start(t, natstest.Options{})
	return openLog(t, testConfig(srv), keyring(t, 1, 0x11)), srv
}

func group(inst events.InstallationID, id string) events.Aggregate {
	return events.Aggregate{Installation: inst, Type: events.AggGroup, ID: id}
}

// msg is an application.message_sent event whose content names it.
func msg(agg events.Aggregate, pos uint64, text string) events.Event {
	return events.Event{
		Aggregate: agg,
		Position:  pos,
		Time:      baseTime.Add(time.Duration(pos) * time.Second),
		Body: events.ApplicationMessageSent{
			GroupID:   []byte(agg.ID),
			Epoch:     1,
			Sender:    agg.Installation,
			MessageID: []byte(fmt.Sprintf("m-%d", pos)),
			Content:   events.NewSecret([]byte(text)),
		},
	}
}

func content(e events.Event) string {
	b, ok := e.Body.(events.ApplicationMessageSent)
	if !ok {
		return fmt.Sprintf("<%s>", e.Body.Kind())
	}
	return string(b.Content.Bytes())
}

func mustAppend(t testing.TB, l *Log, expected uint64, evs ...events.Event) []Appended {
	t.Helper()
	res, err := l.Append(context.Background(), expected, evs...)
	if err != nil {
		t.Fatalf("append at %d: %v", expected, err)
	}
	if len(res) != len(evs) {
		t.Fatalf("append returned %d results for %d events", len(res), len(evs))
	}
	return res
}

func readAll(t testing.TB, l *Log, inst events.InstallationID, from uint64) []Record {
	t.Helper()
	recs, err := tryReadAll(l, inst, from)
	if err != nil {
		t.Fatalf("read %s from %d: %v", inst, from, err)
	}
	return recs
}

func tryReadAll(l *Log, inst events.InstallationID, from uint64) ([]Record, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var recs []Record
	err := l.Read(ctx, inst, from, func(r Record) error {
		recs = append(recs, r)
		return nil
	})
	return recs, err
}

// streamMsgs is the number of messages in the log's stream.
func streamMsgs(t testing.TB, l *Log) uint64 {
	t.Helper()
	info, err := l.stream.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func rawGet(t testing.TB, l *Log, seq uint64) *jetstream.RawStreamMsg {
	t.Helper()
	m, err := l.stream.GetMsg(context.Background(), seq)
	if err != nil {
		t.Fatalf("get seq %d: %v", seq, err)
	}
	return m
}

// sameEvent compares what Read returns with what was appended.
func sameEvent(t testing.TB, got, want events.Event) {
	t.Helper()
	if got.Aggregate != want.Aggregate || got.Position != want.Position || !got.Time.Equal(want.Time) {
		t.Fatalf("event header: got %v/%d/%v, want %v/%d/%v", got.Aggregate, got.Position, got.Time, want.Aggregate, want.Position, want.Time)
	}
	if !reflect.DeepEqual(got.Body, want.Body) {
		t.Fatalf("event body differs for %s position %d", want.Body.Kind(), want.Position)
	}
}

func natstestStart(t testing.TB) *natstest.Server {
	t.Helper()
	return natstest.Start(t, natstest.Options{})
}
