package main

import (
	"encoding/json"
	"os"
	"strings"
	"unicode/utf8"
)

const terminationLimit = 1024

// writeTermination writes the termination message: compact JSON of at most 1 KiB (the
// text fields are shortened, with a trailing "…", to fit).
func writeTermination(path string, message map[string]any) {
	_ = os.WriteFile(path, terminationJSON(message), 0o644)
}

func terminationJSON(message map[string]any) []byte {
	data, _ := json.Marshal(message)
	for _, field := range []string{"summary", "error", "callId", "tool"} {
		text, ok := message[field].(string)
		for ok && len(data) > terminationLimit && text != "" {
			keep := len(text) - (len(data) - terminationLimit) - 1
			if keep < 4 {
				text = ""
			} else {
				text = clip(text, keep)
			}
			message[field] = text
			data, _ = json.Marshal(message)
		}
	}
	if len(data) > terminationLimit {
		data, _ = json.Marshal(map[string]any{"ok": message["ok"], "retryable": message["retryable"], "error": "termination message too long"})
	}
	return data
}

// clip shortens text to at most limit bytes of valid UTF-8, marking the cut with "…".
func clip(text string, limit int) string {
	text = strings.ToValidUTF8(text, "\uFFFD")
	if len(text) <= limit {
		return text
	}
	if limit < 4 {
		return "…"
	}
	cut := text[:limit-3]
	for len(cut) > 0 && !utf8.ValidString(cut) {
		cut = cut[:len(cut)-1]
	}
	return cut + "…"
}

// clipStart keeps the end of text: at most limit bytes, the cut marked with a leading "…".
func clipStart(text string, limit int) string {
	text = strings.ToValidUTF8(text, "\uFFFD")
	if len(text) <= limit {
		return text
	}
	if limit < 4 {
		return "…"
	}
	cut := text[len(text)-(limit-3):]
	for len(cut) > 0 && !utf8.ValidString(cut) {
		cut = cut[1:]
	}
	return "…" + cut
}
