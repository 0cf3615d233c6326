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
	status    int
	message   string
	retryable bool
}

func (e *gatewayError) Error() string { return e.message }

type gateway struct {
	baseURL     string
	token       string
	traceparent string
	client      *http.Client
	delays      []time.Duration
}

func newGateway(baseURL, token, traceparent string) *gateway {
	return &gateway{
		baseURL:     strings.TrimRight(baseURL, "/"),
		token:       token,
		traceparent: traceparent,
		client: &http.Client{
			Timeout: 30 * time.Second,
			// Never follow a redirect: it could carry the bearer token elsewhere.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		delays: []time.Duration{200 * time.Millisecond, 600 * time.Millisecond, 1800 * time.Millisecond},
	}
}

// call sends one JSON request (body nil: none), retrying what is worth retrying, and
// decodes a 2xx answer into out.
func (g *gateway) call(method, path string, body any, out any) error {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return &gatewayError{message: err.Error()}
		}
	}
	var last error
	for attempt := 0; ; attempt++ {
		last = g.once(method, path, payload, out)
		var gerr *gatewayError
		if last == nil || !errors.As(last, &gerr) || !gerr.retryable || attempt >= len(g.delays) {
			return last
		}
		time.Sleep(g.delays[attempt])
	}
}

func (g *gateway) once(method, path string, payload []byte, out any) error {
	var reader io.Reader
	if payload != nil {
		reader = bytes.NewReader(payload)
	}
	req, err := http.NewRequest(method, g.baseURL+path, reader)
	if err != nil {
		return &gatewayError{message: err.Error()}
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
	resp, err := g.client.Do(req)
	if err != nil {
		return &gatewayError{message: fmt.Sprintf("%s %s: %v", method, path, err), retryable: true}
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		if out == nil {
			return nil
		}
		if err := json.Unmarshal(data, out); err != nil {
			return &gatewayError{status: resp.StatusCode, message: "malformed answer from the gateway: " + err.Error()}
		}
		return nil
	}
	retryable := resp.StatusCode >= 500 || resp.StatusCode == 408 || resp.StatusCode == 429
	return &gatewayError{status: resp.StatusCode, message: describe(resp.StatusCode, data), retryable: retryable}
}

// describe turns the API's error shape {"error": {"code", "message"}} into one line.
func describe(status int, data []byte) string {
	var shaped struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(data, &shaped) == nil && shaped.Error.Code != "" {
		return fmt.Sprintf("%d %s: %s", status, shaped.Error.Code, shaped.Error.Message)
	}
	return fmt.Sprintf("HTTP %d: %s", status, clip(string(data), 300))
}
