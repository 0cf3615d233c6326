// word-stats: an example user tool in Go. It reads its params as one JSON object on
// stdin and writes its result as one JSON object on stdout; that is the whole contract
// with the platform (the `sba-step` entrypoint does the rest). Bad input exits with
// code 2: retrying the same params cannot help.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

const (
	maxTextChars = 200000
	defaultTop   = 5
	maxTop       = 50
	wordsPerMin  = 200
)

type params struct {
	Text   string
	Top    int
	Locale string
}

type count struct {
	Word  string `json:"word"`
	Count int    `json:"count"`
}

type result struct {
	Words          int     `json:"words"`
	Sentences      int     `json:"sentences"`
	Characters     int     `json:"characters"`
	ReadingMinutes float64 `json:"readingMinutes"`
	TopWords       []count `json:"topWords"`
}

// stopWords are skipped in topWords (English and Indonesian); they still count as words.
var stopWords = map[string]bool{
	"the": true, "a": true, "an": true, "and": true, "of": true, "to": true, "in": true, "is": true,
	"yang": true, "dan": true, "di": true, "ke": true, "dari": true, "untuk": true, "ini": true, "itu": true,
}

func isWordRune(r rune) bool {
	return unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.Is(unicode.Mn, r)
}

func analyse(p params) result {
	words := strings.FieldsFunc(strings.ToLower(p.Text), func(r rune) bool { return !isWordRune(r) })
	counts := map[string]int{}
	for _, w := range words {
		if !stopWords[w] {
			counts[w]++
		}
	}
	top := make([]count, 0, len(counts))
	for w, n := range counts {
		top = append(top, count{w, n})
	}
	sort.Slice(top, func(i, j int) bool {
		if top[i].Count != top[j].Count {
			return top[i].Count > top[j].Count
		}
		return top[i].Word < top[j].Word
	})
	if len(top) > p.Top {
		top = top[:p.Top]
	}
	return result{
		Words:          len(words),
		Sentences:      sentences(p.Text),
		Characters:     utf8.RuneCountInString(p.Text),
		ReadingMinutes: math.Round(float64(len(words))/wordsPerMin*10) / 10,
		TopWords:       top,
	}
}

// sentences counts runs of text ended by . ! ? (or the end of the text) that hold a word.
func sentences(text string) int {
	n, hasWord := 0, false
	for _, r := range text {
		switch {
		case strings.ContainsRune(".!?…。！？", r):
			if hasWord {
				n++
			}
			hasWord = false
		case isWordRune(r):
			hasWord = true
		}
	}
	if hasWord {
		n++
	}
	return n
}

// parse reads and checks the params object; an error explains what is wrong with it.
func parse(r io.Reader) (params, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return params{}, fmt.Errorf("cannot read stdin: %v", err)
	}
	var raw struct {
		Text   *string      `json:"text"`
		Top    *json.Number `json:"top"`
		Locale *string      `json:"locale"`
	}
	if !bytes.HasPrefix(bytes.TrimSpace(data), []byte("{")) {
		return params{}, errors.New("params must be one JSON object on stdin")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return params{}, fmt.Errorf("params are not a valid JSON object: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return params{}, errors.New("params must be one JSON object on stdin, with nothing after it")
	}
	p := params{Top: defaultTop}
	if raw.Text == nil || *raw.Text == "" {
		return p, errors.New("params.text is required (a non-empty string)")
	}
	p.Text = *raw.Text
	if n := utf8.RuneCountInString(p.Text); n > maxTextChars {
		return p, fmt.Errorf("params.text has %d characters, more than %d", n, maxTextChars)
	}
	if raw.Top != nil {
		f, err := raw.Top.Float64()
		if err != nil || f != math.Trunc(f) || f < 1 || f > maxTop {
			return p, fmt.Errorf("params.top must be an integer from 1 to %d, not %s", maxTop, raw.Top.String())
		}
		p.Top = int(f)
	}
	if raw.Locale != nil {
		if *raw.Locale != "en" && *raw.Locale != "id" {
			return p, fmt.Errorf("params.locale must be \"en\" or \"id\", not %q", *raw.Locale)
		}
		p.Locale = *raw.Locale
	}
	return p, nil
}

// run is the whole program; it returns the exit code.
func run(stdin io.Reader, stdout, stderr io.Writer) int {
	p, err := parse(stdin)
	if err != nil {
		fmt.Fprintln(stderr, "word-stats: "+err.Error())
		return 2
	}
	if err := json.NewEncoder(stdout).Encode(analyse(p)); err != nil {
		fmt.Fprintln(stderr, "word-stats: cannot write the result: "+err.Error())
		return 1
	}
	return 0
}

func main() {
	os.Exit(run(os.Stdin, os.Stdout, os.Stderr))
}
