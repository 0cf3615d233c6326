package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestTerminationMessagesAlwaysFit(t *testing.T) {
	for _, message := range []map[string]any{
		{"ok": false, "error": strings.Repeat("é", 3000), "retryable": false, "tool": "t"},
		{"ok": false, "error": strings.Repeat(`"\`+"\x01", 2000), "retryable": true},
		{"ok": true, "callId": strings.Repeat("c", 2000), "tool": "t", "summary": strings.Repeat("s", 2000)},
		{"ok": false, "error": "short", "callId": strings.Repeat("x", 5000), "tool": strings.Repeat("y", 5000)},
	} {
		data := terminationJSON(message)
		var back map[string]any
		if len(data) > terminationLimit || !utf8.Valid(data) || json.Unmarshal(data, &back) != nil {
			t.Fatalf("%d bytes: %.80q", len(data), data)
		}
		if text, _ := back["error"].(string); len(text) > 200 && !strings.HasSuffix(text, "…") {
			t.Fatalf("cut without a mark: %.40q", text)
		}
	}
	path := filepath.Join(t.TempDir(), "t")
	writeTermination(path, map[string]any{"ok": true, "summary": "x"})
	if data, _ := os.ReadFile(path); string(data) != `{"ok":true,"summary":"x"}` {
		t.Fatalf("%s", data)
	}
}

func TestLastLinesKeepsTheEnd(t *testing.T) {
	text := "first\n\nsecond line\n  \nthird\n\n"
	if got := lastLines(text, 100); got != "first\nsecond line\nthird" {
		t.Fatalf("%q", got)
	}
	if got := lastLines(text, 17); got != "second line\nthird" {
		t.Fatalf("%q", got)
	}
	if got := lastLines(strings.Repeat("x", 50)+"END", 10); got != "…xxxxEND" {
		t.Fatalf("%q", got)
	}
	if got := lastLines("\n \n", 10); got != "" {
		t.Fatalf("%q", got)
	}
}

func TestClipKeepsValidUTF8(t *testing.T) {
	for limit := 0; limit < 12; limit++ {
		got := clip("ééééééé", limit)
		if !utf8.ValidString(got) || (len(got) > limit && got != "…") {
			t.Fatalf("%d: %q", limit, got)
		}
		got = clipStart("ééééééé", limit)
		if !utf8.ValidString(got) || (len(got) > limit && got != "…") {
			t.Fatalf("start %d: %q", limit, got)
		}
	}
}

func TestSummaryNamesUpToFiveKeysInOrder(t *testing.T) {
	_, keys, err := decodeObject([]byte(`{"z":1,"a":{"nested":1},"m":[1],"b":2,"c":3,"d":4,"z":5}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := summary(keys); got != "result with z, a, m, b, c and 1 more" {
		t.Fatalf("%q", got)
	}
}

func TestParamsLine(t *testing.T) {
	for raw, want := range map[string]string{"": "{}\n", "null": "{}\n", `{ "a" : 1.50 }`: `{"a":1.50}` + "\n"} {
		got, err := paramsLine(json.RawMessage(raw))
		if err != nil || string(got) != want {
			t.Fatalf("%q: %q %v", raw, got, err)
		}
	}
	if _, err := paramsLine(json.RawMessage(`[1]`)); err == nil {
		t.Fatal("an array was accepted as params")
	}
}
