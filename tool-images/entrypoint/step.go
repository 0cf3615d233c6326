package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

const (
	exitOK        = 0
	exitTransient = 1
	exitPermanent = 2

	stepPath   = "/internal/v1/step"
	resultPath = "/internal/v1/step/result"

	errorLimit       = 4000 // the error text posted with a failure
	transientTail    = 300  // the stderr tail in a transient failure's message
	defaultMaxResult = 1 << 20
)

// envelope is what GET /internal/v1/step answers (the fields sba-step needs).
type envelope struct {
	RunID          string          `json:"runId"`
	Tenant         string          `json:"tenant"`
	StepID         string          `json:"stepId"`
	Attempt        int             `json:"attempt"`
	Tool           string          `json:"tool"`
	Params         json.RawMessage `json:"params"`
	IdempotencyKey string          `json:"idempotencyKey"`
}

// step is one run of `sba-step -- <command>`: the settings from the environment.
type step struct {
	gw          *gateway
	runID       string
	stepID      string
	attempt     string
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
	var missing []string
	for _, name := range []string{"SBA_GATEWAY_URL", "SBA_STEP_TOKEN"} {
		if strings.TrimSpace(getenv(name)) == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("missing environment: %s", strings.Join(missing, ", "))
	}
	url, token := strings.TrimSpace(getenv("SBA_GATEWAY_URL")), strings.TrimSpace(getenv("SBA_STEP_TOKEN"))
	if !strings.HasPrefix(url, "http://") && !strings.HasPrefix(url, "https://") {
		return nil, fmt.Errorf("SBA_GATEWAY_URL is not an http(s) URL: %q", url)
	}
	maxResult := defaultMaxResult
	if raw := strings.TrimSpace(getenv("SBA_RESULT_MAX_BYTES")); raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("SBA_RESULT_MAX_BYTES is not a positive number: %q", raw)
		}
		maxResult = n
	}
	s := &step{
		gw:          newGateway(url, token, strings.TrimSpace(getenv("TRACEPARENT"))),
		runID:       getenv("SBA_RUN_ID"),
		stepID:      getenv("SBA_STEP_ID"),
		attempt:     getenv("SBA_ATTEMPT"),
		tool:        getenv("SBA_TOOL"),
		termination: terminationPath(getenv),
		maxResult:   maxResult,
		log:         &jsonLog{out: os.Stderr, secret: token},
	}
	s.log.fields = map[string]any{"runId": s.runID, "stepId": s.stepID, "attempt": s.attempt, "tool": s.tool}
	s.gw.log = s.log
	return s, nil
}

// execute runs one step: fetch it, run the program, report; the exit code says how it
// went. stderr receives the program's stderr (sba-step's own logs go to s.log).
func (s *step) execute(command []string, environ []string, stderr io.Writer) int {
	var env envelope
	if err := s.gw.call("GET", stepPath, nil, &env); err != nil {
		return s.stop("fetching the step failed: "+err.Error(), isRetryable(err), nil)
	}
	if mismatch := s.mismatch(env); mismatch != "" {
		return s.stop("the gateway served a different step: "+mismatch, false, nil)
	}
	if s.tool == "" {
		s.tool = env.Tool
	}
	s.log.fields = map[string]any{"runId": env.RunID, "stepId": env.StepID, "attempt": env.Attempt, "tool": s.tool}
	s.log.info("step.fetched", map[string]any{"tenant": env.Tenant})
	params, err := paramsLine(env.Params)
	if err != nil {
		return s.fail("the gateway sent unusable params: " + err.Error())
	}
	key := env.IdempotencyKey
	if key == "" {
		key = env.RunID + ":" + env.StepID
	}

	child := runChild(command, childEnv(environ, key), params, s.maxResult, stderr)
	if child.startErr != nil {
		return s.fail(fmt.Sprintf("cannot start %s: %v", command[0], child.startErr))
	}
	s.log.info("tool.exited", map[string]any{"exitCode": child.exitCode, "state": child.state, "durationMs": child.elapsed.Milliseconds(), "stdoutBytes": len(child.stdout)})
	switch {
	case child.exitCode == exitPermanent:
		reason := lastLines(child.stderrTail, errorLimit)
		if reason == "" {
			reason = fmt.Sprintf("%s exited with code 2", command[0])
		}
		return s.fail(reason)
	case child.exitCode != 0:
		reason := fmt.Sprintf("%s exited with code %d", command[0], child.exitCode)
		if child.exitCode < 0 {
			reason = fmt.Sprintf("%s was stopped (%s)", command[0], child.state)
		}
		if tail := lastLines(child.stderrTail, transientTail); tail != "" {
			reason += ": " + tail
		}
		return s.stop(reason, true, nil)
	case child.overflow:
		return s.fail(fmt.Sprintf("the tool wrote more than %d bytes on stdout", s.maxResult))
	}
	result, keys, err := decodeObject(child.stdout)
	if err != nil {
		return s.fail(fmt.Sprintf("%s wrote no JSON object on stdout: %v", s.toolName(command), err))
	}
	return s.succeed(result, keys)
}

// mismatch says how the served step differs from the one this Job was made for.
func (s *step) mismatch(env envelope) string {
	var diffs []string
	if s.runID != "" && s.runID != env.RunID {
		diffs = append(diffs, fmt.Sprintf("run %q, not %q", env.RunID, s.runID))
	}
	if s.stepID != "" && s.stepID != env.StepID {
		diffs = append(diffs, fmt.Sprintf("step %q, not %q", env.StepID, s.stepID))
	}
	if s.tool != "" && s.tool != env.Tool {
		diffs = append(diffs, fmt.Sprintf("tool %q, not %q", env.Tool, s.tool))
	}
	return strings.Join(diffs, "; ")
}

func (s *step) toolName(command []string) string {
	if s.tool != "" {
		return s.tool
	}
	return command[0]
}

// succeed posts the result; a refusal (4xx) becomes the step's permanent failure.
func (s *step) succeed(result json.RawMessage, keys []string) int {
	var receipt map[string]any
	err := s.gw.call("POST", resultPath, map[string]any{"success": true, "result": result, "error": nil}, &receipt)
	var gerr *gatewayError
	switch {
	case err == nil:
	case isRetryable(err):
		return s.stop("posting the result failed: "+err.Error(), true, nil)
	case errors.As(err, &gerr) && gerr.status >= 400 && gerr.status < 500:
		return s.fail("the gateway refused the result: " + gerr.reason())
	case errors.As(err, &gerr) && gerr.status >= 200 && gerr.status < 300:
		// Recorded, but the receipt is unreadable: still a success.
		s.log.warn("result.receipt_unreadable", map[string]any{"error": clip(err.Error(), 300)})
	default:
		return s.stop("posting the result failed: "+err.Error(), false, nil)
	}
	message := map[string]any{"ok": true, "callId": receiptID(receipt), "tool": s.tool, "summary": s.tool + ": " + summary(keys)}
	s.log.info("step.succeeded", map[string]any{"callId": message["callId"]})
	writeTermination(s.termination, message)
	return exitOK
}

// fail records a permanent failure with the gateway, then stops with exit code 2 (or 1
// when the gateway could not be told, so that a retry records it).
func (s *step) fail(reason string) int {
	reason = clip(reason, errorLimit)
	var receipt map[string]any
	err := s.gw.call("POST", resultPath, map[string]any{"success": false, "result": nil, "error": reason}, &receipt)
	if err != nil {
		if isRetryable(err) {
			s.log.warn("failure.not_recorded", map[string]any{"error": clip(err.Error(), 300)})
			return s.stop(reason, true, nil)
		}
		s.log.warn("failure.refused", map[string]any{"error": clip(err.Error(), 300)})
	}
	return s.stop(reason, false, receipt)
}

// stop writes the termination message of a failure and returns its exit code.
func (s *step) stop(reason string, retryable bool, receipt map[string]any) int {
	s.log.error("step.failed", map[string]any{"error": clip(reason, 1000), "retryable": retryable})
	message := map[string]any{"ok": false, "error": reason, "retryable": retryable}
	if s.tool != "" {
		message["tool"] = s.tool
	}
	if id := receiptID(receipt); id != nil {
		message["callId"] = id
	}
	writeTermination(s.termination, message)
	if retryable {
		return exitTransient
	}
	return exitPermanent
}

func receiptID(receipt map[string]any) any {
	if receipt == nil {
		return nil
	}
	return receipt["callId"]
}

func isRetryable(err error) bool {
	var gerr *gatewayError
	return errors.As(err, &gerr) && gerr.retryable
}
