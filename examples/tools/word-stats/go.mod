module github.com/sba-agentic/examples/word-stats

go 1.22
