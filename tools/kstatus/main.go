// Command kstatus prints the kstatus of one Kubernetes object read as JSON on stdin: the
// status Flux, Helm (--wait with kstatus) and kpt compute from its conditions and
// observedGeneration ("Current", "InProgress", "Failed", ...), a tab, and the message.
// The tests use it to check what GitOps tools will say about a DispatcherSet.
package main

import (
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	var object map[string]interface{}
	data, err := io.ReadAll(os.Stdin)
	if err == nil {
		// apimachinery's decoder keeps integers int64, as kstatus expects of generations
		err = json.Unmarshal(data, &object)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kstatus: reading the object:", err)
		os.Exit(2)
	}
	result, err := status.Compute(&unstructured.Unstructured{Object: object})
	if err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(1)
	}
	fmt.Printf("%s\t%s\n", result.Status, result.Message)
}
