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

// fakeGateway speaks the tool gateway's protocol: GET /internal/v1/step, POST the result.
type fakeGateway struct {
	mu        sync.Mutex
	stepFails int
	refuse    bool
	posted    []map[string]any
	server    *httptest.Server
}

func newFakeGateway(t *testing.T) *fakeGateway {
	g := &fakeGateway{}
	g.server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		defer g.mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer tok" {
			w.WriteHeader(401)
			return
		}
		switch r.URL.Path {
		case "/internal/v1/step":
			if g.stepFails > 0 {
				g.stepFails--
				w.WriteHeader(503)
				return
			}
			json.NewEncoder(w).Encode(map[string]any{
				"runId": "r1", "stepId": "s1", "attempt": 1, "tool": "demo",
				"params": map[string]any{"text": "hi"}, "idempotencyKey": "r1:s1",
			})
		case "/internal/v1/step/result":
			var body map[string]any
			data, _ := io.ReadAll(r.Body)
			json.Unmarshal(data, &body)
			if g.refuse && body["success"] == true {
				w.WriteHeader(422)
				w.Write([]byte(`{"error":{"code":"result_contract_violation","message":"words: required"}}`))
				return
			}
			g.posted = append(g.posted, body)
			w.Write([]byte(`{"callId":"c1"}`))
		default:
			w.WriteHeader(404)
		}
	}))
	t.Cleanup(g.server.Close)
	return g
}

func runStep(t *testing.T, g *fakeGateway, script string) (int, map[string]any) {
	t.Helper()
	termination := filepath.Join(t.TempDir(), "termination-log")
	env := map[string]string{
		"SBA_GATEWAY_URL": g.server.URL, "SBA_STEP_TOKEN": "tok", "SBA_RUN_ID": "r1",
		"SBA_STEP_ID": "s1", "SBA_TERMINATION_LOG": termination,
	}
	s, err := stepFromEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	s.gw.delays = []time.Duration{time.Millisecond, time.Millisecond, time.Millisecond}
	s.log.out = io.Discard
	code := s.execute([]string{"/bin/sh", "-c", script}, os.Environ(), io.Discard)
	var message map[string]any
	data, _ := os.ReadFile(termination)
	if err := json.Unmarshal(data, &message); err != nil {
		t.Fatalf("termination message %q: %v", data, err)
	}
	return code, message
}

func TestSuccessPostsTheProgramsObject(t *testing.T) {
	g := newFakeGateway(t)
	g.stepFails = 2 // retried
	code, message := runStep(t, g, `read -r line; test "$SBA_IDEMPOTENCY_KEY" = r1:s1 || exit 3; echo "{\"echo\": $line, \"n\": 12345678901234567890}"`)
	if code != exitOK || message["ok"] != true || message["callId"] != "c1" {
		t.Fatalf("code %d, message %v", code, message)
	}
	if len(g.posted) != 1 || g.posted[0]["success"] != true {
		t.Fatalf("posted %v", g.posted)
	}
	result := g.posted[0]["result"].(map[string]any)
	if result["echo"].(map[string]any)["text"] != "hi" {
		t.Fatalf("result %v", result)
	}
	if !strings.Contains(message["summary"].(string), "echo, n") {
		t.Fatalf("summary %v", message["summary"])
	}
}

func TestExit2IsAPermanentFailureWithTheStderrTail(t *testing.T) {
	g := newFakeGateway(t)
	code, message := runStep(t, g, `echo "text is missing" >&2; exit 2`)
	if code != exitPermanent || message["retryable"] != false {
		t.Fatalf("code %d, message %v", code, message)
	}
	if len(g.posted) != 1 || g.posted[0]["success"] != false || g.posted[0]["error"] != "text is missing" {
		t.Fatalf("posted %v", g.posted)
	}
}

func TestOtherExitsAreTransientAndPostNothing(t *testing.T) {
	g := newFakeGateway(t)
	code, message := runStep(t, g, `echo busy >&2; exit 1`)
	if code != exitTransient || message["retryable"] != true || len(g.posted) != 0 {
		t.Fatalf("code %d, message %v, posted %v", code, message, g.posted)
	}
	if !strings.Contains(message["error"].(string), "exited with code 1: busy") {
		t.Fatalf("error %v", message["error"])
	}
}

func TestOutputThatIsNoObjectIsPermanent(t *testing.T) {
	for _, out := range []string{"not json", "[1, 2]", `{"a": 1} {"b": 2}`} {
		g := newFakeGateway(t)
		code, _ := runStep(t, g, "echo '"+out+"'")
		if code != exitPermanent || len(g.posted) != 1 || g.posted[0]["success"] != false {
			t.Fatalf("%q: code %d, posted %v", out, code, g.posted)
		}
		if !strings.Contains(g.posted[0]["error"].(string), "no JSON object") {
			t.Fatalf("%q: error %v", out, g.posted[0]["error"])
		}
	}
}

func TestARefusedResultIsRecordedAsTheFailure(t *testing.T) {
	g := newFakeGateway(t)
	g.refuse = true
	code, message := runStep(t, g, `echo '{"count": 3}'`)
	if code != exitPermanent || len(g.posted) != 1 {
		t.Fatalf("code %d, posted %v", code, g.posted)
	}
	if !strings.Contains(g.posted[0]["error"].(string), "result_contract_violation: words: required") {
		t.Fatalf("error %v", g.posted[0]["error"])
	}
	if len(message["error"].(string)) == 0 {
		t.Fatal("no error in the termination message")
	}
}

func TestOversizedOutputIsRefused(t *testing.T) {
	g := newFakeGateway(t)
	termination := filepath.Join(t.TempDir(), "t")
	env := map[string]string{"SBA_GATEWAY_URL": g.server.URL, "SBA_STEP_TOKEN": "tok", "SBA_RESULT_MAX_BYTES": "10", "SBA_TERMINATION_LOG": termination}
	s, _ := stepFromEnv(func(k string) string { return env[k] })
	s.log.out = io.Discard
	code := s.execute([]string{"/bin/sh", "-c", `echo '{"a": "0123456789"}'`}, os.Environ(), io.Discard)
	if code != exitPermanent || !strings.Contains(g.posted[0]["error"].(string), "more than 10 bytes") {
		t.Fatalf("code %d, posted %v", code, g.posted)
	}
}

func TestRedirectsAreNotFollowed(t *testing.T) {
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("followed a redirect with %q", r.Header.Get("Authorization"))
	}))
	defer other.Close()
	redirecting := httptest.NewServer(http.RedirectHandler(other.URL, http.StatusFound))
	defer redirecting.Close()
	gw := newGateway(redirecting.URL, "tok", "")
	if err := gw.call("GET", "/internal/v1/step", nil, &envelope{}); err == nil {
		t.Fatal("a redirect was taken for an answer")
	}
}

func TestInstallCopiesAnExecutable(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "bin", "sba-step")
	if err := install(dest); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(dest)
	if err != nil || info.Mode().Perm()&0o111 == 0 || info.Size() == 0 {
		t.Fatalf("installed %v, %v", info, err)
	}
}

func TestTerminationMessagesFit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t")
	writeTermination(path, map[string]any{"ok": false, "error": strings.Repeat("é", 3000)})
	data, _ := os.ReadFile(path)
	var message map[string]any
	if len(data) > terminationLimit || json.Unmarshal(data, &message) != nil {
		t.Fatalf("%d bytes: %q", len(data), data[:50])
	}
}
