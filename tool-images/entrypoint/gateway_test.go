package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func quickGateway(url string) (*gateway, *[]time.Duration) {
	gw := newGateway(url, "tok", "00-trace-span-01")
	var sleeps []time.Duration
	gw.sleep = func(d time.Duration) { sleeps = append(sleeps, d) }
	return gw, &sleeps
}

func TestRetryableStatusesAreRetriedOthersAreNot(t *testing.T) {
	for status, retried := range map[int]bool{500: true, 503: true, 408: true, 429: true, 400: false, 401: false, 404: false, 409: false, 422: false} {
		var calls atomic.Int32
		server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			calls.Add(1)
			w.WriteHeader(status)
		}))
		gw, sleeps := quickGateway(server.URL)
		err := gw.call("GET", stepPath, nil, &envelope{})
		server.Close()
		want := int32(1)
		if retried {
			want = 4
		}
		if err == nil || calls.Load() != want || isRetryable(err) != retried || len(*sleeps) != int(want-1) {
			t.Fatalf("%d: %d calls, slept %v, err %v", status, calls.Load(), *sleeps, err)
		}
	}
}

func TestErrorsCarryTheAPIsCodeAndMessage(t *testing.T) {
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(403)
		w.Write([]byte(`{"error":{"code":"forbidden","message":"step token\nexpired","requestId":"r-9"}}`))
	}))
	defer server.Close()
	gw, _ := quickGateway(server.URL)
	err := gw.call("GET", stepPath, nil, &envelope{})
	if err == nil || err.Error() != "GET /internal/v1/step: HTTP 403 forbidden: step token expired (request r-9)" {
		t.Fatalf("%v", err)
	}
}

func TestEveryCallCarriesTheHeaders(t *testing.T) {
	var seen []http.Header
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.Header.Clone())
		w.Write([]byte(`{"callId":"c"}`))
	}))
	defer server.Close()
	gw, _ := quickGateway(server.URL + "/")
	var receipt map[string]any
	if err := gw.call("GET", stepPath, nil, &envelope{}); err != nil {
		t.Fatal(err)
	}
	if err := gw.call("POST", resultPath, map[string]any{"success": true}, &receipt); err != nil {
		t.Fatal(err)
	}
	for _, h := range seen {
		if h.Get("Authorization") != "Bearer tok" || h.Get("traceparent") != "00-trace-span-01" ||
			h.Get("Accept") != "application/json" || h.Get("User-Agent") != "sba-step/"+version {
			t.Fatalf("headers %v", h)
		}
	}
	if seen[1].Get("Content-Type") != "application/json" || receipt["callId"] != "c" {
		t.Fatalf("%v %v", seen[1], receipt)
	}
}

func TestNoRedirectIsFollowedForAnyMethod(t *testing.T) {
	var leaked atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { leaked.Add(1) }))
	defer other.Close()
	for _, status := range []int{301, 302, 307, 308} {
		redirecting := httptest.NewServer(http.RedirectHandler(other.URL+"/steal", status))
		gw, sleeps := quickGateway(redirecting.URL)
		errGet := gw.call("GET", stepPath, nil, &envelope{})
		errPost := gw.call("POST", resultPath, map[string]any{"success": true}, nil)
		redirecting.Close()
		if errGet == nil || errPost == nil || isRetryable(errGet) || len(*sleeps) != 0 {
			t.Fatalf("%d: %v / %v", status, errGet, errPost)
		}
		if !strings.Contains(errGet.Error(), "redirects are not followed") {
			t.Fatalf("%d: %v", status, errGet)
		}
	}
	if leaked.Load() != 0 {
		t.Fatalf("%d requests followed a redirect", leaked.Load())
	}
}

func TestAMalformedAnswerIsPermanent(t *testing.T) {
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("<html>")) }))
	defer server.Close()
	gw, _ := quickGateway(server.URL)
	err := gw.call("GET", stepPath, nil, &envelope{})
	if err == nil || isRetryable(err) || !strings.Contains(err.Error(), "malformed answer") {
		t.Fatalf("%v", err)
	}
}
