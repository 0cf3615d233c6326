package main

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestAnalyse(t *testing.T) {
	got := analyse(params{Text: "Refunds are paid in full. Refunds go to the card! Damaged goods are refunded fast?", Top: 3})
	if got.Words != 15 || got.Sentences != 3 || got.Characters != 82 || got.ReadingMinutes != 0.1 {
		t.Fatalf("%+v", got)
	}
	want := []count{{"are", 2}, {"refunds", 2}, {"card", 1}} // ties alphabetically; "the", "in", "to" skipped
	if len(got.TopWords) != 3 || got.TopWords[0] != want[0] || got.TopWords[1] != want[1] || got.TopWords[2] != want[2] {
		t.Fatalf("%+v", got.TopWords)
	}
}

func TestIndonesianAndUnicode(t *testing.T) {
	id := analyse(params{Text: "Barang yang rusak dikembalikan. Dana dikembalikan ke rekening itu", Top: 2})
	if id.TopWords[0] != (count{"dikembalikan", 2}) || id.TopWords[1] != (count{"barang", 1}) || id.Sentences != 2 || id.Words != 9 {
		t.Fatalf("%+v", id)
	}
	u := analyse(params{Text: "Ünïcode café, CAFÉ… naïve 42 42", Top: 5})
	if u.Words != 6 || u.TopWords[0] != (count{"42", 2}) || u.TopWords[1] != (count{"café", 2}) || u.Characters != 31 || u.Sentences != 2 {
		t.Fatalf("%+v", u)
	}
}

func TestReadingMinutesRoundsToOneDecimal(t *testing.T) {
	got := analyse(params{Text: strings.Repeat("word ", 530), Top: 1})
	if got.Words != 530 || got.ReadingMinutes != 2.7 || got.Sentences != 1 {
		t.Fatalf("%+v", got)
	}
}

func TestParseRefusesBadInput(t *testing.T) {
	for _, input := range []string{
		"", "nope", "[]", "null", `{"top": 3}`, `{"text": ""}`, `{"text": 7}`,
		`{"text": "x", "top": 99}`, `{"text": "x", "top": 0}`, `{"text": "x", "top": 2.5}`,
		`{"text": "x", "locale": "fr"}`, `{"text": "x"} {"text": "y"}`,
		`{"text": "` + strings.Repeat("é", maxTextChars+1) + `"}`,
	} {
		if _, err := parse(strings.NewReader(input)); err == nil {
			t.Fatalf("%.40q accepted", input)
		}
	}
	p, err := parse(strings.NewReader(`{"text": "x"}` + "\n"))
	if err != nil || p.Top != 5 {
		t.Fatalf("%+v %v", p, err)
	}
	p, err = parse(strings.NewReader(`{"text": "x", "top": 3.0, "locale": "id"}`))
	if err != nil || p.Top != 3 || p.Locale != "id" {
		t.Fatalf("%+v %v", p, err)
	}
}

func TestRunWritesOneObjectOrExits2(t *testing.T) {
	var out, errs strings.Builder
	if code := run(strings.NewReader(`{"text":"The cat and the hat. A cat!","top":2}`), &out, &errs); code != 0 {
		t.Fatalf("exit %d: %s", code, errs.String())
	}
	var result map[string]any
	if err := json.Unmarshal([]byte(out.String()), &result); err != nil {
		t.Fatal(err)
	}
	if result["words"] != 7.0 || result["sentences"] != 2.0 || len(result["topWords"].([]any)) != 2 {
		t.Fatalf("%v", result)
	}
	out.Reset()
	if code := run(strings.NewReader(`{"top": 2}`), &out, &errs); code != 2 || out.Len() != 0 || !strings.Contains(errs.String(), "params.text is required") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out.String(), errs.String())
	}
	out.Reset()
	if code := run(strings.NewReader(`{"text": "...!"}`), &out, &errs); code != 0 || !strings.Contains(out.String(), `"topWords":[]`) {
		t.Fatalf("exit %d, stdout %q", code, out.String())
	}
}
