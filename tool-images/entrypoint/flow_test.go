package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestSuccessPostsTheObjectAndWritesTheTerminationMessage(t *testing.T) {
	d := newDouble(t)
	d.stepStatuses = []int{503} // retried
	run := runAgainst(t, d, nil, sh(`cat >/dev/null
echo '  {"words": 2, "sentences": 1, "topWords": [{"word": "hello", "count": 1}], "big": 12345678901234567890}  '`)...)
	if run.code != exitOK {
		t.Fatalf("exit %d: %s\n%s", run.code, run.rawMessage, run.logs)
	}
	if len(d.posted) != 1 || d.posted[0] != `{"error":null,"result":{"words":2,"sentences":1,"topWords":[{"word":"hello","count":1}],"big":12345678901234567890},"success":true}` {
		t.Fatalf("posted %q", d.posted)
	}
	want := `{"callId":"call-7","ok":true,"summary":"word-stats: result with words, sentences, topWords, big","tool":"word-stats"}`
	if run.rawMessage != want {
		t.Fatalf("termination message %s", run.rawMessage)
	}
	if len(run.sleeps) != 1 || run.sleeps[0] != 200*time.Millisecond {
		t.Fatalf("slept %v", run.sleeps)
	}
	for _, h := range d.headers {
		if h.Get("traceparent") == "" || h.Get("Accept") != "application/json" || !strings.HasPrefix(h.Get("User-Agent"), "sba-step/") {
			t.Fatalf("headers %v", h)
		}
	}
	if !strings.Contains(run.logs, `"event":"step.fetched"`) || !strings.Contains(run.logs, `"runId":"run-1"`) {
		t.Fatalf("logs %s", run.logs)
	}
}

func TestTheProgramGetsParamsOnStdinAndTheIdempotencyKey(t *testing.T) {
	d := newDouble(t)
	d.step["params"] = map[string]any{"text": "a <b> & c", "n": json.Number("12345678901234567890")}
	out := t.TempDir()
	run := runAgainst(t, d, nil, sh(`cat > `+out+`/stdin; env > `+out+`/env; echo '{}'`)...)
	if run.code != exitOK || run.termination["summary"] != "word-stats: empty result" {
		t.Fatalf("exit %d: %s", run.code, run.rawMessage)
	}
	stdin, _ := os.ReadFile(filepath.Join(out, "stdin"))
	if string(stdin) != `{"n":12345678901234567890,"text":"a <b> & c"}`+"\n" {
		t.Fatalf("stdin %q", stdin)
	}
	env, _ := os.ReadFile(filepath.Join(out, "env"))
	if !strings.Contains(string(env), "SBA_IDEMPOTENCY_KEY=run-1:stats\n") || strings.Contains(string(env), "SBA_PARAMS") {
		t.Fatalf("env %s", env)
	}
}

func TestTheIdempotencyKeyDefaultsToRunAndStep(t *testing.T) {
	d := newDouble(t)
	delete(d.step, "idempotencyKey")
	run := runAgainst(t, d, nil, sh(`test "$SBA_IDEMPOTENCY_KEY" = run-1:stats || exit 2; echo '{"ok": true}'`)...)
	if run.code != exitOK {
		t.Fatalf("exit %d: %s", run.code, run.rawMessage)
	}
}

func TestExit2PostsTheLastStderrLines(t *testing.T) {
	d := newDouble(t)
	run := runAgainst(t, d, nil, sh(`echo "noise"; echo "params.text is required" >&2; echo >&2; exit 2`)...)
	bodies := d.postedBodies(t)
	if run.code != exitPermanent || len(bodies) != 1 || bodies[0]["success"] != false || bodies[0]["result"] != nil {
		t.Fatalf("exit %d, posted %v", run.code, bodies)
	}
	if bodies[0]["error"] != "params.text is required" || run.termination["error"] != "params.text is required" {
		t.Fatalf("error %v / %v", bodies[0]["error"], run.termination)
	}
	if run.termination["retryable"] != false || run.termination["callId"] != "call-7" || run.termination["tool"] != "word-stats" {
		t.Fatalf("termination %s", run.rawMessage)
	}
}

func TestExit2WithoutStderrNamesTheCommand(t *testing.T) {
	d := newDouble(t)
	run := runAgainst(t, d, nil, sh(`exit 2`)...)
	bodies := d.postedBodies(t)
	if run.code != exitPermanent || bodies[0]["error"] != "/bin/sh exited with code 2" {
		t.Fatalf("exit %d, posted %v", run.code, bodies)
	}
}

func TestOtherExitsAreTransientWithTheEndOfStderr(t *testing.T) {
	d := newDouble(t)
	run := runAgainst(t, d, nil, sh(`i=0; while [ $i -lt 50 ]; do echo "line $i of the early noise" >&2; i=$((i+1)); done; echo "database busy" >&2; exit 3`)...)
	if run.code != exitTransient || len(d.posted) != 0 || run.termination["retryable"] != true {
		t.Fatalf("exit %d, posted %v, %s", run.code, d.posted, run.rawMessage)
	}
	text := run.termination["error"].(string)
	if !strings.HasPrefix(text, "/bin/sh exited with code 3: ") || !strings.HasSuffix(text, "database busy") || len(text) > 340 {
		t.Fatalf("error %q", text)
	}
}

func TestAProgramKilledByASignalIsTransient(t *testing.T) {
	d := newDouble(t)
	run := runAgainst(t, d, nil, sh(`kill -9 $$`)...)
	if run.code != exitTransient || len(d.posted) != 0 || !strings.Contains(run.termination["error"].(string), "killed") {
		t.Fatalf("exit %d, posted %v, %s", run.code, d.posted, run.rawMessage)
	}
}

func TestSigtermIsForwardedToTheProgram(t *testing.T) {
	d := newDouble(t)
	ready := filepath.Join(t.TempDir(), "ready")
	go func() {
		for i := 0; i < 500; i++ {
			if _, err := os.Stat(ready); err == nil {
				_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	run := runAgainst(t, d, nil, sh(`trap 'kill $pid; echo got SIGTERM >&2; exit 143' TERM; sleep 10 & pid=$!; touch `+ready+`; wait`)...)
	if run.code != exitTransient || !strings.Contains(run.termination["error"].(string), "got SIGTERM") {
		t.Fatalf("exit %d: %s", run.code, run.rawMessage)
	}
}

func TestOutputThatIsNotOneObjectIsAPermanentFailure(t *testing.T) {
	cases := map[string]string{
		"not json":           "not JSON",
		"[1, 2]":             "an array, not an object",
		`"text"`:             "a string, not an object",
		`{"a": 1}}`:          "more data after",
		`{"a": 1} {"b": 2}`:  "more data after",
		`{"a": `:             "cut short",
		"":                   "the output is empty",
		`{"a": 1} trailing`:  "more data after",
		"null":               "null, not an object",
		`{"a": 1}` + "\n\n ": "",
	}
	for out, reason := range cases {
		d := newDouble(t)
		run := runAgainst(t, d, nil, "/bin/sh", "-c", `printf '%s' "$1"`, "sh", out)
		bodies := d.postedBodies(t)
		if reason == "" {
			if run.code != exitOK {
				t.Fatalf("%q: exit %d %s", out, run.code, run.rawMessage)
			}
			continue
		}
		if run.code != exitPermanent || len(bodies) != 1 || bodies[0]["success"] != false {
			t.Fatalf("%q: exit %d, posted %v", out, run.code, bodies)
		}
		text := bodies[0]["error"].(string)
		if !strings.HasPrefix(text, "word-stats wrote no JSON object on stdout: ") || !strings.Contains(text, reason) {
			t.Fatalf("%q: error %q", out, text)
		}
	}
}

func TestOversizedOutputIsAPermanentFailure(t *testing.T) {
	d := newDouble(t)
	run := runAgainst(t, d, map[string]string{"SBA_RESULT_MAX_BYTES": "64"}, sh(`i=0; while [ $i -lt 1000 ]; do printf '0123456789'; i=$((i+1)); done`)...)
	bodies := d.postedBodies(t)
	if run.code != exitPermanent || len(bodies) != 1 || bodies[0]["error"] != "the tool wrote more than 64 bytes on stdout" {
		t.Fatalf("exit %d, posted %v", run.code, bodies)
	}
}

func TestARefusedResultBecomesTheFailure(t *testing.T) {
	d := newDouble(t)
	d.resultStatuses = []int{422}
	d.resultBody = `{"error":{"code":"result_contract_violation","message":"words: required","requestId":"rq-1"}}`
	run := runAgainst(t, d, nil, sh(`echo '{"count": 3}'`)...)
	bodies := d.postedBodies(t)
	if run.code != exitPermanent || len(bodies) != 1 || bodies[0]["success"] != false {
		t.Fatalf("exit %d, posted %v", run.code, bodies)
	}
	want := "the gateway refused the result: result_contract_violation: words: required (request rq-1)"
	if bodies[0]["error"] != want || run.termination["error"] != want {
		t.Fatalf("error %v / %s", bodies[0]["error"], run.rawMessage)
	}
}

func TestAResultPostThatKeepsFailingIsTransient(t *testing.T) {
	d := newDouble(t)
	d.resultStatuses = []int{500, 502, 503, 504}
	run := runAgainst(t, d, nil, sh(`echo '{"a": 1}'`)...)
	if run.code != exitTransient || len(d.posted) != 0 || run.termination["retryable"] != true {
		t.Fatalf("exit %d, posted %v, %s", run.code, d.posted, run.rawMessage)
	}
	if len(run.sleeps) != 3 || run.sleeps[2] != 1800*time.Millisecond {
		t.Fatalf("slept %v", run.sleeps)
	}
}

func TestAFailureThatCannotBeRecordedIsTransient(t *testing.T) {
	d := newDouble(t)
	d.resultStatuses = []int{503, 503, 503, 503}
	run := runAgainst(t, d, nil, sh(`echo bad input >&2; exit 2`)...)
	if run.code != exitTransient || run.termination["error"] != "bad input" || run.termination["retryable"] != true {
		t.Fatalf("exit %d: %s", run.code, run.rawMessage)
	}
}

func TestACommandThatCannotStartIsPermanent(t *testing.T) {
	for _, command := range []string{"no-such-tool-anywhere", "/nonexistent/tool", os.DevNull} {
		d := newDouble(t)
		run := runAgainst(t, d, nil, command)
		bodies := d.postedBodies(t)
		if run.code != exitPermanent || len(bodies) != 1 || !strings.HasPrefix(bodies[0]["error"].(string), "cannot start "+command+": ") {
			t.Fatalf("%s: exit %d, posted %v", command, run.code, bodies)
		}
	}
}

func TestADifferentStepIsRefusedWithoutRunningIt(t *testing.T) {
	for name, env := range map[string]map[string]string{
		"run":  {"SBA_RUN_ID": "run-2"},
		"step": {"SBA_STEP_ID": "other"},
		"tool": {"SBA_TOOL": "http.fetch"},
	} {
		d := newDouble(t)
		marker := filepath.Join(t.TempDir(), "ran")
		run := runAgainst(t, d, env, sh(`touch `+marker+`; echo '{}'`)...)
		if _, err := os.Stat(marker); err == nil {
			t.Fatalf("%s: the program ran", name)
		}
		if run.code != exitPermanent || len(d.posted) != 0 || !strings.Contains(run.termination["error"].(string), "different step") {
			t.Fatalf("%s: exit %d, posted %v, %s", name, run.code, d.posted, run.rawMessage)
		}
	}
}

func TestAStepRefusedByTheGatewayIsPermanent(t *testing.T) {
	d := newDouble(t)
	run := runAgainst(t, d, map[string]string{"SBA_STEP_TOKEN": "wrong"}, sh(`echo '{}'`)...)
	if run.code != exitPermanent || len(run.sleeps) != 0 {
		t.Fatalf("exit %d, slept %v", run.code, run.sleeps)
	}
	if !strings.Contains(run.termination["error"].(string), "unauthenticated: bad token") {
		t.Fatalf("%s", run.rawMessage)
	}
}

func TestAnUnreachableGatewayIsTransient(t *testing.T) {
	d := newDouble(t)
	d.server.Close()
	run := runAgainst(t, d, nil, sh(`echo '{}'`)...)
	if run.code != exitTransient || len(run.sleeps) != 3 || run.termination["retryable"] != true {
		t.Fatalf("exit %d, slept %v, %s", run.code, run.sleeps, run.rawMessage)
	}
}

func TestMissingEnvironmentIsPermanent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "termination-log")
	env := map[string]string{"SBA_STEP_TOKEN": "secret-token", "SBA_TERMINATION_LOG": path}
	var stderr strings.Builder
	code := run([]string{"--", "/bin/true"}, func(k string) string { return env[k] }, nil, &stderr, &stderr)
	data, _ := os.ReadFile(path)
	if code != exitPermanent || string(data) != `{"error":"missing environment: SBA_GATEWAY_URL","ok":false,"retryable":false}` {
		t.Fatalf("exit %d, %s", code, data)
	}
	if strings.Contains(stderr.String(), "secret-token") {
		t.Fatal("the token was logged")
	}
}
