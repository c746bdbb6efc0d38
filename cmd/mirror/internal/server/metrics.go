package server

import (
	"bytes"
	"cmp"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/noether-mirror/mirror/store"
)

// durationBuckets are the upper bounds (seconds) of the request duration
// histogram.
func durationBuckets() []float64 {
	return []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}
}

// reqKey labels mirror_http_requests_total.
type reqKey struct {
	method string
	route  route
	code   int
}

// histogram is a fixed-bucket duration histogram updated lock-free.
// counts[i] counts observations in bucket i alone (the last slot is
// +Inf); exposition makes them cumulative.
type histogram struct {
	counts   []atomic.Uint64
	sumNanos atomic.Uint64
}

// metrics holds the server's counters. Its methods are safe for
// concurrent use.
type metrics struct {
	bounds    []float64
	requests  sync.Map // reqKey → *atomic.Uint64
	durations [numRoutes]histogram
}

func newMetrics() *metrics {
	m := &metrics{bounds: durationBuckets()}
	for i := range m.durations {
		m.durations[i].counts = make([]atomic.Uint64, len(m.bounds)+1)
	}
	return m
}

// metricMethod keeps the method label low-cardinality.
func metricMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
		http.MethodPatch, http.MethodDelete, http.MethodOptions:
		return m
	}
	return "other"
}

func (m *metrics) observe(method string, rt route, code int, d time.Duration) {
	k := reqKey{method: metricMethod(method), route: rt, code: code}
	c, ok := m.requests.Load(k)
	if !ok {
		c, _ = m.requests.LoadOrStore(k, new(atomic.Uint64))
	}
	c.(*atomic.Uint64).Add(1)

	h := &m.durations[rt]
	secs := d.Seconds()
	i, _ := slices.BinarySearch(m.bounds, secs) // first bound >= secs
	h.counts[i].Add(1)
	h.sumNanos.Add(uint64(max(d, 0)))
}

// snapshotGauges are the snapshot-derived values /metrics reports.
type snapshotGauges struct {
	info  Info
	stats store.Stats
	now   time.Time
	// view is the snapshot's trust view; nil without a trust policy.
	view *trustView
}

// write renders the metrics in the Prometheus text exposition format
// 0.0.4. snap is nil when no snapshot could be read.
func (m *metrics) write(b *bytes.Buffer, snap *snapshotGauges) {
	header := func(name, typ, help string) {
		fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
	}

	header("mirror_http_requests_total", "counter", "HTTP requests answered, by method, route and status code.")
	type row struct {
		k reqKey
		n uint64
	}
	var rows []row
	m.requests.Range(func(k, v any) bool {
		rows = append(rows, row{k.(reqKey), v.(*atomic.Uint64).Load()})
		return true
	})
	slices.SortFunc(rows, func(a, b row) int {
		return cmp.Or(cmp.Compare(a.k.route, b.k.route), strings.Compare(a.k.method, b.k.method), cmp.Compare(a.k.code, b.k.code))
	})
	for _, r := range rows {
		fmt.Fprintf(b, "mirror_http_requests_total{method=%s,route=%s,code=\"%d\"} %d\n",
			labelValue(r.k.method), labelValue(r.k.route.String()), r.k.code, r.n)
	}

	header("mirror_http_request_duration_seconds", "histogram", "Time to answer an HTTP request, by route.")
	for rt := range numRoutes {
		h := &m.durations[rt]
		label := labelValue(rt.String())
		var cum uint64
		for i, bound := range m.bounds {
			cum += h.counts[i].Load()
			fmt.Fprintf(b, "mirror_http_request_duration_seconds_bucket{route=%s,le=\"%s\"} %d\n",
				label, formatFloat(bound), cum)
		}
		cum += h.counts[len(m.bounds)].Load()
		fmt.Fprintf(b, "mirror_http_request_duration_seconds_bucket{route=%s,le=\"+Inf\"} %d\n", label, cum)
		fmt.Fprintf(b, "mirror_http_request_duration_seconds_sum{route=%s} %s\n",
			label, formatFloat(float64(h.sumNanos.Load())/1e9))
		fmt.Fprintf(b, "mirror_http_request_duration_seconds_count{route=%s} %d\n", label, cum)
	}

	header("mirror_snapshot_available", "gauge", "1 when the mirror snapshot could be read for this scrape, else 0.")
	if snap == nil {
		b.WriteString("mirror_snapshot_available 0\n")
		return
	}
	b.WriteString("mirror_snapshot_available 1\n")
	if !snap.info.LastSync.IsZero() {
		header("mirror_snapshot_age_seconds", "gauge", "Seconds since the last successful sync of the served snapshot.")
		fmt.Fprintf(b, "mirror_snapshot_age_seconds %s\n", formatFloat(max(0, snap.now.Sub(snap.info.LastSync).Seconds())))
	}
	header("mirror_snapshot_generation", "gauge", "Generation of the snapshot being served.")
	fmt.Fprintf(b, "mirror_snapshot_generation %d\n", snap.info.Generation)

	header("mirror_stages", "gauge", "Stages served, by lifecycle.")
	names := make([]string, 0, 5)
	for _, k := range store.AllLifecycleKinds() {
		names = append(names, k.Name())
	}
	for name := range snap.stats.ByLifecycle {
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	slices.Sort(names[4:])
	for _, name := range names {
		fmt.Fprintf(b, "mirror_stages{lifecycle=%s} %d\n", labelValue(name), snap.stats.ByLifecycle[name])
	}

	header("mirror_quarantined_stages", "gauge", "Upstream stages held back from serving (quarantined), including those the trust policy holds back.")
	quarantined := snap.info.Quarantined
	if snap.view != nil {
		quarantined += snap.view.untrusted
	}
	fmt.Fprintf(b, "mirror_quarantined_stages %d\n", quarantined)
	if snap.view != nil {
		header("mirror_untrusted_stages", "gauge", "Stages of the snapshot the trust policy (--trusted-keys) holds back: unsigned or signed by another key.")
		fmt.Fprintf(b, "mirror_untrusted_stages %d\n", snap.view.untrusted)
	}
}

// labelValue quotes a label value as the exposition format requires.
func labelValue(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}

func formatFloat(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "+Inf"
	case math.IsInf(f, -1):
		return "-Inf"
	case math.IsNaN(f):
		return "NaN"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

func (s *Server) serveMetrics(req *request) {
	var gauges *snapshotGauges
	if snap, err := s.src.Acquire(); err != nil {
		s.log.Warn("metrics: no snapshot to report on", "err", err)
	} else {
		info := snap.Info()
		req.gen, req.has = info.Generation, true
		view, err := s.viewIfTrusted(req.r.Context(), &s.cur, snap, info)
		var st store.Stats
		if err == nil {
			st, err = servedStats(req.r.Context(), &s.cur, snap, info, view)
		}
		s.release(snap)
		if err != nil {
			s.log.Warn("metrics: computing the mirror's stats", "err", err)
		} else {
			gauges = &snapshotGauges{info: info, stats: st, now: s.opts.Now(), view: view}
		}
	}
	var b bytes.Buffer
	s.metrics.write(&b, gauges)
	h := req.w.Header()
	h.Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(b.Len()))
	h.Set("Cache-Control", "no-store")
	req.w.WriteHeader(http.StatusOK)
	_, _ = req.w.Write(b.Bytes())
}
