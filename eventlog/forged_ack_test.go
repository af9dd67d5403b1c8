package eventlog

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/natstest"
)

// ackForger forwards TCP between clients and a nats-server and, while a
// forged sequence or count is set, rewrites the PubAcks of atomic batch
// commits the server sends (MSG payloads with a "batch" field): the
// server stores the batch as sent, the client is told it ends at the
// forged sequence, or holds the forged count of messages. Everything
// else passes unchanged.
type ackForger struct {
	*natstest.Proxy
	seq    atomic.Uint64 // the forged "seq"; 0: the server's
	count  atomic.Uint64 // the forged "count"; 0: the server's
	forged atomic.Int64  // how many PubAcks were rewritten
}

func newAckForger(t *testing.T, serverURL string) *ackForger {
	t.Helper()
	f := &ackForger{}
	f.Proxy = natstest.NewProxy(t, serverURL, func(client io.Writer, server io.Reader) {
		natstest.EditMessages(client, server, func(_ string, data []byte) ([]byte, bool) {
			if forged, ok := f.forge(data); ok {
				return forged, true
			}
			return data, true
		})
	})
	return f
}

// forge gives data with its "seq" and "count" replaced by the forged
// ones that are set when data is a batch commit's PubAck.
func (f *ackForger) forge(data []byte) ([]byte, bool) {
	seq, count := f.seq.Load(), f.count.Load()
	if (seq == 0 && count == 0) || !bytes.Contains(data, []byte(`"batch":`)) {
		return nil, false
	}
	var ack map[string]any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&ack); err != nil || ack["stream"] == nil || ack["batch"] == nil {
		return nil, false
	}
	if seq != 0 {
		ack["seq"] = seq
	}
	if count != 0 {
		ack["count"] = count
	}
	out, err := json.Marshal(ack)
	if err != nil {
		return nil, false
	}
	f.forged.Add(1)
	return out, true
}

// A batch appended by AppendBulk (published async, its commit's PubAck
// awaited) whose PubAck the batch cannot have (forged by a proxy; the
// server itself stored the batch at 1-3) is refused, naming what is
// wrong, as Append refuses it: a last stream sequence the batch cannot
// end at (1, for 3 messages), reported before as appended at sequences
// that wrapped below zero; a count of other messages (2 of 3), taken
// before as the batch's.
func TestBulkBatchAckForgedIsRefused(t *testing.T) {
	for _, c := range []struct {
		name  string
		forge func(*ackForger)
		want  []string // in the error
	}{
		{"below the batch", func(f *ackForger) { f.seq.Store(1) }, []string{"stream sequence 1", "batch of 3"}},
		{"another count", func(f *ackForger) { f.count.Store(2) }, []string{"batch of 3", "acknowledged 2 messages"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := natstest.Start(t, natstest.Options{})
			proxy := newAckForger(t, srv.URL())
			cfg := testConfig(srv)
			cfg.NATSURL = proxy.URL()
			l := openLog(t, cfg, keyring(t, 1, 0x11))
			ctx := context.Background()

			agg := group(instA, "forged")
			c.forge(proxy)
			res, err := l.AppendBulk(ctx, []Transition{{Expected: 0, Events: []events.Event{msg(agg, 1, "a"), msg(agg, 2, "b"), msg(agg, 3, "c")}}})
			if proxy.forged.Load() == 0 {
				t.Fatalf("no batch PubAck went through the proxy (AppendBulk: %v)", err)
			}
			if err == nil {
				t.Fatalf("a batch of 3 with a forged PubAck was reported appended: %+v", res)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("the error does not say %q: %v", w, err)
				}
			}
			if len(res) != 1 || res[0] != nil {
				t.Fatalf("results of the refused batch: %+v", res)
			}
			// Append (synchronous) refuses it the same way.
			if res, err := l.Append(ctx, 3, msg(agg, 4, "d"), msg(agg, 5, "e"), msg(agg, 6, "f")); err == nil || !strings.Contains(err.Error(), c.want[len(c.want)-1]) {
				t.Fatalf("Append of a batch of 3 with a forged PubAck: %+v, %v; want it refused", res, err)
			}
			// The server stored both; a Log reading straight from the
			// server sees the first at 1-3.
			recs := readAll(t, openLog(t, testConfig(srv), keyring(t, 1, 0x11)), instA, 0)
			if len(recs) != 6 || recs[0].Seq != 1 || recs[2].Seq != 3 {
				t.Fatalf("the stream holds %d records, want both batches, the first at 1-3", len(recs))
			}
		})
	}
}
