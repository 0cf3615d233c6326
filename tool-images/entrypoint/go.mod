module github.com/sba-agentic/sba-step

go 1.22
