package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"
)

const (
	exitOK        = 0
	exitTransient = 1
	exitPermanent = 2

	terminationLimit = 1024
	errorLimit       = 4000
	stderrKeep       = 4000
)

type envelope struct {
	RunID          string         `json:"runId"`
	StepID         string         `json:"stepId"`
	Attempt        int            `json:"attempt"`
	Tool           string         `json:"tool"`
	Params         map[string]any `json:"params"`
	IdempotencyKey string         `json:"idempotencyKey"`
}

type step struct {
	gw          *gateway
	runID       string
	stepID      string
	tool        string
	termination string
	maxResult   int
	log         *jsonLog
}

func terminationPath(getenv func(string) string) string {
	if path := getenv("SBA_TERMINATION_LOG"); path != "" {
		return path
	}
	return "/dev/termination-log"
}

func stepFromEnv(getenv func(string) string) (*step, error) {
	url, token := getenv("SBA_GATEWAY_URL"), getenv("SBA_STEP_TOKEN")
	if url == "" || token == "" {
		return nil, errors.New("SBA_GATEWAY_URL and SBA_STEP_TOKEN must be set")
	}
	maxResult := 1 << 20
	if raw := getenv("SBA_RESULT_MAX_BYTES"); raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("SBA_RESULT_MAX_BYTES is not a positive number: %q", raw)
		}
		maxResult = n
	}
	return &step{
		gw:          newGateway(url, token, getenv("TRACEPARENT")),
		runID:       getenv("SBA_RUN_ID"),
		stepID:      getenv("SBA_STEP_ID"),
		tool:        getenv("SBA_TOOL"),
		termination: terminationPath(getenv),
		maxResult:   maxResult,
		log:         &jsonLog{out: os.Stderr, secret: token},
	}, nil
}

// execute runs one step: fetch it, run the program, report; the exit code says how it went.
func (s *step) execute(command []string, environ []string, stderr io.Writer) int {
	var env envelope
	if err := s.gw.call("GET", "/internal/v1/step", nil, &env); err != nil {
		return s.stop(err.Error(), isRetryable(err), nil)
	}
	if (s.runID != "" && s.runID != env.RunID) || (s.stepID != "" && s.stepID != env.StepID) {
		return s.stop(fmt.Sprintf("the gateway served step %s/%s, not %s/%s", env.RunID, env.StepID, s.runID, s.stepID), false, nil)
	}
	if s.tool == "" {
		s.tool = env.Tool
	}
	s.log.fields = map[string]any{"runId": env.RunID, "stepId": env.StepID, "attempt": env.Attempt, "tool": s.tool}
	s.log.info("step.fetched", nil)
	key := env.IdempotencyKey
	if key == "" {
		key = env.RunID + ":" + env.StepID
	}
	params := env.Params
	if params == nil {
		params = map[string]any{}
	}
	input, _ := json.Marshal(params)

	cmd := exec.Command(command[0], command[1:]...)
	cmd.Env = append(append([]string{}, environ...), "SBA_IDEMPOTENCY_KEY="+key)
	cmd.Stdin = bytes.NewReader(append(input, '\n'))
	out := &capped{limit: s.maxResult}
	tail := &ring{limit: stderrKeep}
	cmd.Stdout = out
	cmd.Stderr = io.MultiWriter(stderr, tail)
	if err := cmd.Start(); err != nil {
		return s.fail(fmt.Sprintf("cannot start %s: %v", command[0], err))
	}
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		for sig := range signals {
			_ = cmd.Process.Signal(sig)
		}
	}()
	started := time.Now()
	waitErr := cmd.Wait()
	signal.Stop(signals)
	close(signals)
	code := cmd.ProcessState.ExitCode()
	s.log.info("tool.exited", map[string]any{"exitCode": code, "seconds": time.Since(started).Seconds()})
	if out.overflow {
		return s.fail(fmt.Sprintf("%s wrote more than %d bytes on stdout", s.tool, s.maxResult))
	}
	if waitErr != nil || code != 0 {
		last := strings.TrimSpace(tail.String())
		if code == exitPermanent {
			if last == "" {
				last = fmt.Sprintf("%s exited with code 2", command[0])
			}
			return s.fail(last)
		}
		reason := fmt.Sprintf("%s exited with code %d", command[0], code)
		if code < 0 {
			reason = fmt.Sprintf("%s was stopped: %v", command[0], waitErr)
		}
		if last != "" {
			reason += ": " + clip(last, 300)
		}
		return s.stop(reason, true, nil)
	}
	result, err := decodeObject(out.buf.Bytes())
	if err != nil {
		return s.fail(fmt.Sprintf("%s wrote no JSON object on stdout: %v", s.tool, err))
	}
	var receipt map[string]any
	err = s.gw.call("POST", "/internal/v1/step/result", map[string]any{"success": true, "result": result, "error": nil}, &receipt)
	if err != nil {
		if isRetryable(err) {
			return s.stop("posting the result failed: "+err.Error(), true, nil)
		}
		return s.fail("the gateway refused the result: " + err.Error())
	}
	message := map[string]any{"ok": true, "tool": s.tool, "callId": receipt["callId"], "summary": s.tool + ": " + summary(result)}
	s.log.info("step.succeeded", nil)
	writeTermination(s.termination, message)
	return exitOK
}

// fail records a permanent failure with the gateway, then stops with exit code 2.
func (s *step) fail(reason string) int {
	reason = clip(reason, errorLimit)
	var receipt map[string]any
	err := s.gw.call("POST", "/internal/v1/step/result", map[string]any{"success": false, "result": nil, "error": reason}, &receipt)
	if err != nil && isRetryable(err) {
		return s.stop(reason, true, nil) // not recorded: let the Job try again
	}
	return s.stop(reason, false, receipt)
}

func (s *step) stop(reason string, retryable bool, receipt map[string]any) int {
	s.log.error("step.failed", map[string]any{"error": reason, "retryable": retryable})
	message := map[string]any{"ok": false, "error": reason, "retryable": retryable}
	if s.tool != "" {
		message["tool"] = s.tool
	}
	if receipt != nil && receipt["callId"] != nil {
		message["callId"] = receipt["callId"]
	}
	writeTermination(s.termination, message)
	if retryable {
		return exitTransient
	}
	return exitPermanent
}

func isRetryable(err error) bool {
	var gerr *gatewayError
	return errors.As(err, &gerr) && gerr.retryable
}

// decodeObject accepts exactly one JSON object (numbers kept exact).
func decodeObject(data []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(bytes.TrimSpace(data)))
	dec.UseNumber()
	var value any
	if err := dec.Decode(&value); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("more than one JSON value")
	}
	object, ok := value.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("a JSON %T, not an object", value)
	}
	return object, nil
}

func summary(result map[string]any) string {
	keys := make([]string, 0, len(result))
	for k := range result {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if len(keys) > 5 {
		keys = append(keys[:5], "…")
	}
	return "result with " + strings.Join(keys, ", ")
}

// writeTermination writes compact JSON of at most 1 KiB, shortening the text fields.
func writeTermination(path string, message map[string]any) {
	for _, field := range []string{"summary", "error"} {
		text, ok := message[field].(string)
		for ok {
			data, _ := json.Marshal(message)
			if len(data) <= terminationLimit || text == "" {
				break
			}
			text = clip(text, len(text)-(len(data)-terminationLimit)-8)
			message[field] = text
		}
	}
	data, _ := json.Marshal(message)
	if len(data) > terminationLimit {
		data, _ = json.Marshal(map[string]any{"ok": message["ok"], "error": "termination message too long"})
	}
	_ = os.WriteFile(path, data, 0o644)
}

// clip shortens text to at most limit bytes of valid UTF-8, marking the cut with "…".
func clip(text string, limit int) string {
	if len(text) <= limit {
		return text
	}
	if limit < 4 {
		return "…"
	}
	cut := text[:limit-3]
	for !utf8.ValidString(cut) {
		cut = cut[:len(cut)-1]
	}
	return cut + "…"
}

// capped keeps at most limit bytes and remembers whether more came.
type capped struct {
	buf      bytes.Buffer
	limit    int
	overflow bool
}

func (c *capped) Write(p []byte) (int, error) {
	room := c.limit - c.buf.Len()
	if len(p) > room {
		c.overflow = true
		if room > 0 {
			c.buf.Write(p[:room])
		}
		return len(p), nil
	}
	return c.buf.Write(p)
}

// ring keeps the last limit bytes written.
type ring struct {
	data  []byte
	limit int
}

func (r *ring) Write(p []byte) (int, error) {
	r.data = append(r.data, p...)
	if len(r.data) > r.limit {
		r.data = r.data[len(r.data)-r.limit:]
	}
	return len(p), nil
}

func (r *ring) String() string { return strings.ToValidUTF8(string(r.data), "") }

// jsonLog writes JSON lines; the step token never appears in them.
type jsonLog struct {
	out    io.Writer
	secret string
	fields map[string]any
}

func (l *jsonLog) write(level, event string, extra map[string]any) {
	record := map[string]any{"ts": time.Now().UTC().Format(time.RFC3339Nano), "level": level, "event": event}
	for k, v := range l.fields {
		record[k] = v
	}
	for k, v := range extra {
		record[k] = v
	}
	data, _ := json.Marshal(record)
	line := string(data)
	if l.secret != "" {
		line = strings.ReplaceAll(line, l.secret, "[redacted]")
	}
	fmt.Fprintln(l.out, line)
}

func (l *jsonLog) info(event string, extra map[string]any)  { l.write("info", event, extra) }
func (l *jsonLog) error(event string, extra map[string]any) { l.write("error", event, extra) }
