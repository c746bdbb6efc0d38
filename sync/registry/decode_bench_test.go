package registry

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"
)

// BenchmarkDecodePage decodes a 200-stage /stages response (the stdlib
// stages, repeated, compacted as a registry serves them: the fixture file
// is indented), envelope and page, as the client does for every page.
func BenchmarkDecodePage(b *testing.B) {
	raw, err := os.ReadFile("../../testdata/noether-stdlib-stages.json")
	if err != nil {
		b.Fatal(err)
	}
	var stages []json.RawMessage
	if err := json.Unmarshal(raw, &stages); err != nil {
		b.Fatal(err)
	}
	var body bytes.Buffer
	body.WriteString(`{"ok":true,"result":{"stages":[`)
	for i := range 200 {
		if i > 0 {
			body.WriteByte(',')
		}
		if err := json.Compact(&body, stages[i%len(stages)]); err != nil {
			b.Fatal(err)
		}
	}
	body.WriteString(`],"total":200}}`)
	b.SetBytes(int64(body.Len()))
	for b.Loop() {
		var ps pageSplit
		_, re := decodeEnvelope(200, "application/json", body.Bytes(), DefaultMaxJSONDepth, ps.walk)
		if re != nil {
			b.Fatal(re.message)
		}
		p, err := ps.page()
		if err != nil || len(p.Stages) != 200 {
			b.Fatalf("%d stages, %v", len(p.Stages), err)
		}
	}
}
