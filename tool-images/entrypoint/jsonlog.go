package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// jsonLog writes JSON lines; the step token never appears in them.
type jsonLog struct {
	mu     sync.Mutex
	out    io.Writer
	secret string
	fields map[string]any
}

func (l *jsonLog) write(level, event string, extra map[string]any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	record := map[string]any{"ts": time.Now().UTC().Format(time.RFC3339Nano), "level": level, "event": event}
	for k, v := range l.fields {
		if v != "" && v != nil {
			record[k] = v
		}
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
func (l *jsonLog) warn(event string, extra map[string]any)  { l.write("warn", event, extra) }
func (l *jsonLog) error(event string, extra map[string]any) { l.write("error", event, extra) }
