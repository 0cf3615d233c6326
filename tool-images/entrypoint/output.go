package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// paramsLine is the program's stdin: the params object, compact, then a newline.
func paramsLine(raw json.RawMessage) ([]byte, error) {
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 || bytes.Equal(trimmed, []byte("null")) {
		return []byte("{}\n"), nil
	}
	if trimmed[0] != '{' {
		return nil, errors.New("params is not a JSON object")
	}
	var out bytes.Buffer
	if err := json.Compact(&out, trimmed); err != nil {
		return nil, err
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

// decodeObject accepts exactly one JSON object and nothing after it. It returns the
// object compacted (numbers untouched) and its top-level keys in their order.
func decodeObject(data []byte) (json.RawMessage, []string, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return nil, nil, errors.New("the output is empty")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var value any
	if err := dec.Decode(&value); err != nil {
		return nil, nil, shortJSONError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, nil, errors.New("more data after the first JSON value")
	}
	if _, ok := value.(map[string]any); !ok {
		return nil, nil, fmt.Errorf("it is %s, not an object", kindOf(value))
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, data); err != nil {
		return nil, nil, shortJSONError(err)
	}
	return compact.Bytes(), topLevelKeys(compact.Bytes()), nil
}

// topLevelKeys lists an object's keys in document order (first occurrence only).
func topLevelKeys(object []byte) []string {
	dec := json.NewDecoder(bytes.NewReader(object))
	if _, err := dec.Token(); err != nil { // {
		return nil
	}
	seen := map[string]bool{}
	var keys []string
	for dec.More() {
		token, err := dec.Token()
		if err != nil {
			return keys
		}
		key, _ := token.(string)
		if !seen[key] {
			seen[key] = true
			keys = append(keys, key)
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return keys
		}
	}
	return keys
}

func kindOf(value any) string {
	switch value.(type) {
	case nil:
		return "null"
	case []any:
		return "an array"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	}
	return fmt.Sprintf("%T", value)
}

func shortJSONError(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("the JSON is cut short")
	}
	var syntax *json.SyntaxError
	if errors.As(err, &syntax) {
		return fmt.Errorf("not JSON (%v at byte %d)", syntax, syntax.Offset)
	}
	return err
}

// summary names up to five top-level keys of the result.
func summary(keys []string) string {
	if len(keys) == 0 {
		return "empty result"
	}
	shown := keys
	if len(shown) > 5 {
		shown = shown[:5]
	}
	text := "result with " + strings.Join(shown, ", ")
	if more := len(keys) - len(shown); more > 0 {
		text += fmt.Sprintf(" and %d more", more)
	}
	return text
}
