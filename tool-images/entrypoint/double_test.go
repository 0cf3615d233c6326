package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// gatewayDouble answers GET /internal/v1/step with `step` and records every result POST;
// stepStatuses / resultStatuses are answered (in turn) before the normal answer.
type gatewayDouble struct {
	mu             sync.Mutex
	step           map[string]any
	stepStatuses   []int
	resultStatuses []int
	resultBody     string // body sent with a resultStatuses answer
	posted         []string
	headers        []http.Header
	server         *httptest.Server
}

func newDouble(t *testing.T) *gatewayDouble {
	t.Helper()
	d := &gatewayDouble{step: map[string]any{
		"runId": "run-1", "tenant": "acme", "stepId": "stats", "attempt": 1, "tool": "word-stats",
		"params": map[string]any{"text": "Hello world", "top": 3}, "idempotencyKey": "run-1:stats",
		"inputs": map[string]any{}, "config": map[string]any{},
	}}
	d.server = httptest.NewServer(http.HandlerFunc(d.serve))
	t.Cleanup(d.server.Close)
	return d
}

func (d *gatewayDouble) serve(w http.ResponseWriter, r *http.Request) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.headers = append(d.headers, r.Header.Clone())
	if r.Header.Get("Authorization") != "Bearer secret-token" {
		w.WriteHeader(401)
		io.WriteString(w, `{"error":{"code":"unauthenticated","message":"bad token","requestId":"rq"}}`)
		return
	}
	switch {
	case r.Method == "GET" && r.URL.Path == "/internal/v1/step":
		if len(d.stepStatuses) > 0 {
			status := d.stepStatuses[0]
			d.stepStatuses = d.stepStatuses[1:]
			w.WriteHeader(status)
			io.WriteString(w, `{"error":{"code":"unavailable","message":"try later"}}`)
			return
		}
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false) // as the API does
		enc.Encode(d.step)
	case r.Method == "POST" && r.URL.Path == "/internal/v1/step/result":
		body, _ := io.ReadAll(r.Body)
		if len(d.resultStatuses) > 0 {
			status := d.resultStatuses[0]
			d.resultStatuses = d.resultStatuses[1:]
			w.WriteHeader(status)
			io.WriteString(w, d.resultBody)
			return
		}
		d.posted = append(d.posted, string(body))
		io.WriteString(w, `{"callId":"call-7","recorded":true}`)
	default:
		w.WriteHeader(404)
	}
}

// postedBodies decodes the recorded result POSTs.
func (d *gatewayDouble) postedBodies(t *testing.T) []map[string]any {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []map[string]any
	for _, raw := range d.posted {
		var body map[string]any
		if err := json.Unmarshal([]byte(raw), &body); err != nil {
			t.Fatalf("posted %q: %v", raw, err)
		}
		out = append(out, body)
	}
	return out
}

type stepRun struct {
	code        int
	termination map[string]any
	rawMessage  string
	logs        string
	sleeps      []time.Duration
}

// runAgainst runs `sba-step -- <command>` in-process against the double.
func runAgainst(t *testing.T, d *gatewayDouble, extraEnv map[string]string, command ...string) stepRun {
	t.Helper()
	dir := t.TempDir()
	env := map[string]string{
		"SBA_GATEWAY_URL": d.server.URL, "SBA_STEP_TOKEN": "secret-token", "SBA_RUN_ID": "run-1",
		"SBA_STEP_ID": "stats", "SBA_ATTEMPT": "1", "SBA_TOOL": "word-stats",
		"SBA_TERMINATION_LOG": filepath.Join(dir, "termination-log"),
		"TRACEPARENT":         "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
	}
	for k, v := range extraEnv {
		if v == "" {
			delete(env, k)
		} else {
			env[k] = v
		}
	}
	s, err := stepFromEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	var sleeps []time.Duration
	s.log.out = &logs
	s.gw.sleep = func(d time.Duration) { sleeps = append(sleeps, d) }
	environ := append(os.Environ(), "SBA_PARAMS=should-not-pass")
	code := s.execute(command, environ, io.Discard)
	run := stepRun{code: code, logs: logs.String(), sleeps: sleeps}
	data, err := os.ReadFile(env["SBA_TERMINATION_LOG"])
	if err != nil {
		t.Fatalf("no termination message: %v", err)
	}
	run.rawMessage = string(data)
	if len(data) > terminationLimit {
		t.Fatalf("termination message of %d bytes", len(data))
	}
	if err := json.Unmarshal(data, &run.termination); err != nil {
		t.Fatalf("termination message %q: %v", data, err)
	}
	if strings.Contains(run.logs, "secret-token") {
		t.Fatalf("the token was logged: %s", run.logs)
	}
	return run
}

func sh(script string) []string { return []string{"/bin/sh", "-c", script} }
