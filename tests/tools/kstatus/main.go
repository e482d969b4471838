// Command kstatus reads Kubernetes objects as JSON on stdin (one per line, concatenated, a JSON
// array, or a List with items) and prints, one JSON line per object, the status that
// sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute gives it: the rules Flux, kpt and
// `kubectl wait`-style tooling use to decide whether a resource is Current, InProgress or
// Failed. Test tool only; see build.sh.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

// result is one output line.
type result struct {
	APIVersion string             `json:"apiVersion"`
	Kind       string             `json:"kind"`
	Namespace  string             `json:"namespace,omitempty"`
	Name       string             `json:"name"`
	Status     string             `json:"status"`
	Message    string             `json:"message"`
	Conditions []status.Condition `json:"conditions,omitempty"`
	Error      string             `json:"error,omitempty"`
}

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer) error {
	dec := json.NewDecoder(in)
	dec.UseNumber()
	enc := json.NewEncoder(out)
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("reading JSON: %w", err)
		}
		objs, err := objects(raw)
		if err != nil {
			return err
		}
		for _, obj := range objs {
			if err := enc.Encode(compute(obj)); err != nil {
				return err
			}
		}
	}
}

// objects flattens a JSON array or a List into its objects.
func objects(raw json.RawMessage) ([]map[string]any, error) {
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) > 0 && trimmed[0] == '[' {
		var items []json.RawMessage
		if err := json.Unmarshal(trimmed, &items); err != nil {
			return nil, err
		}
		var all []map[string]any
		for _, item := range items {
			objs, err := objects(item)
			if err != nil {
				return nil, err
			}
			all = append(all, objs...)
		}
		return all, nil
	}
	var obj map[string]any
	d := json.NewDecoder(bytes.NewReader(trimmed))
	d.UseNumber()
	if err := d.Decode(&obj); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	// Numbers stay json.Number while decoding; unstructured wants int64/float64.
	obj = normalize(obj).(map[string]any)
	kind, _ := obj["kind"].(string)
	if items, ok := obj["items"].([]any); ok && strings.HasSuffix(kind, "List") {
		var all []map[string]any
		for _, item := range items {
			if m, ok := item.(map[string]any); ok {
				all = append(all, m)
			}
		}
		return all, nil
	}
	return []map[string]any{obj}, nil
}

func normalize(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			t[k] = normalize(e)
		}
		return t
	case []any:
		for i, e := range t {
			t[i] = normalize(e)
		}
		return t
	case json.Number:
		if i, err := t.Int64(); err == nil {
			return i
		}
		f, _ := t.Float64()
		return f
	default:
		return v
	}
}

func compute(obj map[string]any) result {
	u := &unstructured.Unstructured{Object: obj}
	r := result{
		APIVersion: u.GetAPIVersion(),
		Kind:       u.GetKind(),
		Namespace:  u.GetNamespace(),
		Name:       u.GetName(),
	}
	res, err := status.Compute(u)
	if err != nil {
		r.Status = status.UnknownStatus.String()
		r.Error = err.Error()
		return r
	}
	r.Status = res.Status.String()
	r.Message = res.Message
	r.Conditions = res.Conditions
	return r
}
