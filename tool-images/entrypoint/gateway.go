package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// gatewayError is a failed gateway call; retryable when another try may succeed.
type gatewayError struct {
	status    int    // 0: no HTTP answer (connection error, malformed answer)
	code      string // the API's error code, when it sent one
	detail    string // the API's error message (or the start of the body)
	message   string // the whole story, for logs and termination messages
	retryable bool
}

func (e *gatewayError) Error() string { return e.message }

// reason is "<code>: <message>" when the API explained itself, else "HTTP <status>: …".
func (e *gatewayError) reason() string {
	switch {
	case e.code != "":
		return e.code + ": " + e.detail
	case e.status != 0:
		return fmt.Sprintf("HTTP %d: %s", e.status, e.detail)
	}
	return e.message
}

type gateway struct {
	baseURL     string
	token       string
	traceparent string
	client      *http.Client
	delays      []time.Duration
	sleep       func(time.Duration)
	log         *jsonLog
}

var defaultDelays = []time.Duration{200 * time.Millisecond, 600 * time.Millisecond, 1800 * time.Millisecond}

func newGateway(baseURL, token, traceparent string) *gateway {
	return &gateway{
		baseURL:     strings.TrimRight(baseURL, "/"),
		token:       token,
		traceparent: traceparent,
		client: &http.Client{
			Timeout: 30 * time.Second,
			// No proxy from the environment: the gateway is in-cluster or local.
			Transport: &http.Transport{Proxy: nil, MaxIdleConns: 2, IdleConnTimeout: 30 * time.Second},
			// Never follow a redirect: it could carry the bearer token elsewhere.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		delays: defaultDelays,
		sleep:  time.Sleep,
	}
}

// call sends one JSON request (body nil: none), retrying connection errors, 5xx, 408
// and 429, and decodes a 2xx answer into out.
func (g *gateway) call(method, path string, body any, out any) error {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return &gatewayError{message: fmt.Sprintf("%s %s: %v", method, path, err)}
		}
	}
	for attempt := 0; ; attempt++ {
		err := g.once(method, path, payload, out)
		var gerr *gatewayError
		if err == nil || !errors.As(err, &gerr) || !gerr.retryable || attempt >= len(g.delays) {
			return err
		}
		if g.log != nil {
			g.log.warn("gateway.retry", map[string]any{"method": method, "path": path, "attempt": attempt + 1, "error": clip(err.Error(), 300)})
		}
		g.sleep(g.delays[attempt])
	}
}

func (g *gateway) once(method, path string, payload []byte, out any) error {
	var reader io.Reader
	if payload != nil {
		reader = bytes.NewReader(payload)
	}
	req, err := http.NewRequest(method, g.baseURL+path, reader)
	if err != nil {
		return &gatewayError{message: fmt.Sprintf("%s %s: %v", method, path, err)}
	}
	req.Header.Set("Authorization", "Bearer "+g.token)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "sba-step/"+version)
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if g.traceparent != "" {
		req.Header.Set("traceparent", g.traceparent)
	}
	started := time.Now()
	resp, err := g.client.Do(req)
	if err != nil {
		return &gatewayError{message: fmt.Sprintf("%s %s: gateway unreachable: %v", method, path, err), retryable: true}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if g.log != nil {
		g.log.info("gateway.call", map[string]any{"method": method, "path": path, "status": resp.StatusCode, "durationMs": time.Since(started).Milliseconds()})
	}
	if err != nil {
		return &gatewayError{status: resp.StatusCode, message: fmt.Sprintf("%s %s: reading the answer: %v", method, path, err), retryable: true}
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		if out == nil {
			return nil
		}
		if err := json.Unmarshal(data, out); err != nil {
			return &gatewayError{status: resp.StatusCode, message: fmt.Sprintf("%s %s: malformed answer from the gateway: %v", method, path, err)}
		}
		return nil
	}
	gerr := httpError(resp.StatusCode, data)
	if gerr.code != "" {
		gerr.message = fmt.Sprintf("%s %s: HTTP %d %s", method, path, resp.StatusCode, gerr.reason())
	} else {
		gerr.message = fmt.Sprintf("%s %s: %s", method, path, gerr.reason())
	}
	return gerr
}

// httpError reads the API's error shape {"error": {"code", "message", "requestId"}}.
func httpError(status int, data []byte) *gatewayError {
	gerr := &gatewayError{status: status, retryable: status >= 500 || status == 408 || status == 429}
	var shaped struct {
		Error struct {
			Code      string `json:"code"`
			Message   string `json:"message"`
			RequestID string `json:"requestId"`
		} `json:"error"`
	}
	if json.Unmarshal(data, &shaped) == nil && shaped.Error.Code != "" {
		gerr.code = shaped.Error.Code
		gerr.detail = clip(oneLine(shaped.Error.Message), 1000)
		if shaped.Error.RequestID != "" {
			gerr.detail += " (request " + shaped.Error.RequestID + ")"
		}
		return gerr
	}
	if status >= 300 && status < 400 {
		gerr.detail = "redirects are not followed"
	} else {
		gerr.detail = clip(oneLine(string(data)), 300)
	}
	return gerr
}

func oneLine(text string) string {
	return strings.Join(strings.Fields(strings.ToValidUTF8(text, "")), " ")
}
