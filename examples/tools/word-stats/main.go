// word-stats: an example user tool in Go. It reads its params as one JSON object on
// stdin and writes its result as one JSON object on stdout; that is the whole contract
// with the platform. Exit code 2 on bad input (retrying cannot help).
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

type params struct {
	Text   string `json:"text"`
	Top    int    `json:"top"`
	Locale string `json:"locale"`
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

var stopWords = map[string]bool{
	"the": true, "a": true, "an": true, "and": true, "of": true, "to": true, "in": true,
	"is": true, "are": true, "yang": true, "dan": true, "di": true, "ke": true, "dari": true,
	"untuk": true, "ini": true, "itu": true,
}

func analyse(p params) result {
	words := strings.FieldsFunc(strings.ToLower(p.Text), func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r)
	})
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
	sentences := 0
	inSentence := false
	for _, r := range p.Text {
		switch {
		case r == '.' || r == '!' || r == '?':
			if inSentence {
				sentences++
			}
			inSentence = false
		case !unicode.IsSpace(r):
			inSentence = true
		}
	}
	if inSentence {
		sentences++
	}
	return result{
		Words:          len(words),
		Sentences:      sentences,
		Characters:     utf8.RuneCountInString(p.Text),
		ReadingMinutes: math.Round(float64(len(words))/200*10) / 10,
		TopWords:       top,
	}
}

func parse(r io.Reader) (params, error) {
	p := params{Top: 5}
	if err := json.NewDecoder(r).Decode(&p); err != nil {
		return p, fmt.Errorf("params are not a JSON object: %v", err)
	}
	if p.Text == "" {
		return p, fmt.Errorf("params.text is required")
	}
	if p.Top < 1 || p.Top > 50 {
		return p, fmt.Errorf("params.top must be between 1 and 50, not %d", p.Top)
	}
	return p, nil
}

func main() {
	p, err := parse(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if err := json.NewEncoder(os.Stdout).Encode(analyse(p)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
