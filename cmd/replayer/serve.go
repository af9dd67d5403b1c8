package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/telemetry"
)

// The operations endpoint (--metrics ADDR, follow and demo): one HTTP
// server with
//
//	/metrics  Prometheus: the library's telemetry.Metrics (the same one
//	          the command hands to eventlog.Config.Metrics), the command's
//	          own series, and the Go and process collectors;
//	/healthz  200 while the process runs and the NATS server it is
//	          connected to answers a ping within healthzPing, else 503
//	          with the reason;
//	/readyz   200 when the command is ready (follow: every read model
//	          healthy and caught up within --ready-lag), else 503; a JSON
//	          body says why.
//
// Nothing served carries a secret: installation ids, database paths and
// error messages (which never hold a key) only.

// metricsFlagHelp is --metrics's help.
const metricsFlagHelp = "serve /metrics (Prometheus), /healthz and /readyz over HTTP on `ADDR` (host:port, e.g. :9464 or 127.0.0.1:9464); the server stops with the command"

// registerMetricsFlag registers --metrics on fs.
func registerMetricsFlag(fs *flag.FlagSet) *string {
	return fs.String("metrics", "", metricsFlagHelp)
}

// readiness reports whether the command is ready and a JSON-encodable
// body saying why (or why not).
type readiness func(ctx context.Context) (bool, any)

// opsServer is the running operations endpoint. A nil *opsServer (no
// --metrics) is valid: every method does nothing, and Metrics returns nil
// (which records nothing).
type opsServer struct {
	env     *cliEnv
	addr    string // the address listened on (the port resolved)
	metrics *telemetry.Metrics
	srv     *http.Server
	served  chan struct{} // closed when Serve returned

	log   atomic.Pointer[eventlog.Log]
	ready atomic.Pointer[readiness]

	closeOnce sync.Once
}

// startOpsServer listens on addr and serves the endpoints until Close. An
// empty addr starts nothing (and returns nil). extra are the command's own
// collectors, registered beside the library's. An address that cannot be
// listened on (in use, not an address) is an error naming it.
func startOpsServer(env *cliEnv, addr string, extra ...prometheus.Collector) (*opsServer, error) {
	if addr == "" {
		return nil, nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, usageError{fmt.Sprintf("--metrics %q: want host:port (e.g. :9464): %v", addr, err)}
	}
	m := telemetry.NewMetrics()
	reg := prometheus.NewRegistry()
	cs := append([]prometheus.Collector{m,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	}, extra...)
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("--metrics: registering the metrics: %w", err)
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics %s: cannot listen there: %w", addr, err)
	}
	s := &opsServer{env: env, addr: ln.Addr().String(), metrics: m, served: make(chan struct{})}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", s.healthz)
	mux.HandleFunc("/readyz", s.readyz)
	s.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() {
		defer close(s.served)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			env.logger().Error("metrics server stopped", "addr", s.addr, "err", err)
		}
	}()
	env.logger().Info("serving metrics", "addr", s.addr, "paths", "/metrics /healthz /readyz")
	return s, nil
}

// Metrics returns the collector to hand to eventlog.Config.Metrics (nil
// without --metrics).
func (s *opsServer) Metrics() *telemetry.Metrics {
	if s == nil {
		return nil
	}
	return s.metrics
}

// SetLog gives the endpoint the open log, whose connection /healthz reports.
func (s *opsServer) SetLog(l *eventlog.Log) {
	if s != nil {
		s.log.Store(l)
	}
}

// SetReadiness sets what /readyz asks. Until it is set, /readyz is 503
// "starting" (or, for a command that never sets it, follows /healthz once
// the log is open: see readyz).
func (s *opsServer) SetReadiness(r readiness) {
	if s != nil {
		s.ready.Store(&r)
	}
}

// Close stops the server: it stops accepting, lets requests under way
// finish (at most 5 s) and returns when it has stopped.
func (s *opsServer) Close() {
	if s == nil {
		return
	}
	s.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.srv.Shutdown(ctx); err != nil {
			s.srv.Close()
		}
		<-s.served
		s.env.logger().Debug("metrics server stopped", "addr", s.addr)
	})
}

// health returns "" when the process is healthy, else why not.
func (s *opsServer) health() string {
	l := s.log.Load()
	switch {
	case l == nil:
		return "starting: the event log is not open yet"
	case !l.Connected():
		return "not connected to NATS (the client is reconnecting)"
	}
	if err := l.Responsive(healthzPing); err != nil {
		if !l.Connected() {
			return "not connected to NATS (the client is reconnecting)"
		}
		return err.Error()
	}
	return ""
}

// healthzPing bounds the round trip to the server /healthz makes: a
// server that stopped answering (hung, or a path that drops packets while
// the connection stays up) is unhealthy at once, not after the client's
// pings time out.
const healthzPing = 5 * time.Second

func (s *opsServer) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if why := s.health(); why != "" {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, why)
		return
	}
	fmt.Fprintln(w, "ok")
}

// readyzTimeout bounds how long /readyz spends asking the stream.
const readyzTimeout = 10 * time.Second

func (s *opsServer) readyz(w http.ResponseWriter, r *http.Request) {
	var ready bool
	var body any
	if rf := s.ready.Load(); rf != nil {
		ctx, cancel := context.WithTimeout(r.Context(), readyzTimeout)
		ready, body = (*rf)(ctx)
		cancel()
	} else if s.log.Load() == nil {
		body = map[string]any{"ready": false, "reason": s.health()}
	} else {
		// A command without read models of its own (demo): ready
		// while healthy.
		why := s.health()
		ready = why == ""
		body = map[string]any{"ready": ready, "reason": why}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if !ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(body)
}
