// Command promql-names parses PromQL expressions with Prometheus' own parser, one JSON string
// per line on stdin, and prints for each a JSON object: the metric names its selectors name
// ("names"), or the parser's "error". It exits 1 if any expression did not parse. The chart
// tests use it to check the alerts and the dashboard against what the proxy and the operator
// expose.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sort"

	"github.com/prometheus/prometheus/promql/parser"
)

type result struct {
	Expr  string   `json:"expr"`
	Names []string `json:"names,omitempty"`
	Error string   `json:"error,omitempty"`
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	out := json.NewEncoder(os.Stdout)
	failed := false
	for in.Scan() {
		var expr string
		if err := json.Unmarshal(in.Bytes(), &expr); err != nil {
			fmt.Fprintln(os.Stderr, "promql-names: a line is not a JSON string:", err)
			os.Exit(2)
		}
		node, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
		if err != nil {
			failed = true
			_ = out.Encode(result{Expr: expr, Error: err.Error()})
			continue
		}
		seen := map[string]bool{}
		parser.Inspect(node, func(n parser.Node, _ []parser.Node) error {
			if selector, ok := n.(*parser.VectorSelector); ok && selector.Name != "" {
				seen[selector.Name] = true
			}
			return nil
		})
		names := make([]string, 0, len(seen))
		for name := range seen {
			names = append(names, name)
		}
		sort.Strings(names)
		_ = out.Encode(result{Expr: expr, Names: names})
	}
	if failed {
		os.Exit(1)
	}
}
