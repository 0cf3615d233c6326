package main

import (
	"strings"
	"testing"
)

func TestAnalyse(t *testing.T) {
	got := analyse(params{Text: "Refunds are paid in full. Refunds go to the card. Damaged goods are refunded fast.", Top: 2})
	if got.Words != 15 || got.Sentences != 3 || got.TopWords[0] != (count{"refunds", 2}) {
		t.Fatalf("%+v", got)
	}
	if len(got.TopWords) != 2 || got.TopWords[1].Word != "card" {
		t.Fatalf("ties are broken alphabetically: %+v", got.TopWords)
	}
	id := analyse(params{Text: "Barang yang rusak dikembalikan. Dana dikembalikan", Top: 1})
	if id.TopWords[0] != (count{"dikembalikan", 2}) || id.Sentences != 2 {
		t.Fatalf("%+v", id)
	}
}

func TestParseRefusesBadInput(t *testing.T) {
	for _, input := range []string{"nope", `{"top": 3}`, `{"text": "x", "top": 99}`} {
		if _, err := parse(strings.NewReader(input)); err == nil {
			t.Fatalf("%q accepted", input)
		}
	}
	p, err := parse(strings.NewReader(`{"text": "x"}`))
	if err != nil || p.Top != 5 {
		t.Fatalf("%+v %v", p, err)
	}
}
