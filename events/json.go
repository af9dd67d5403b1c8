package events

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"time"
)

// MarshalJSON encodes e for people and tools (kind, version, aggregate,
// position, time, body with msgpack field names) with every [Secret]
// redacted. Use [MarshalJSONReveal] to include secret bytes on purpose.
func (e Event) MarshalJSON() ([]byte, error) { return marshalEventJSON(e, false) }

// MarshalJSONReveal is Event.MarshalJSON but with [Secret] fields as base64
// of their bytes, for an inspect tool run by someone entitled to see them.
func MarshalJSONReveal(e Event) ([]byte, error) { return marshalEventJSON(e, true) }

type jsonEvent struct {
	Kind      Kind      `json:"kind"`
	Version   uint16    `json:"version"`
	Aggregate jsonAgg   `json:"aggregate"`
	Position  uint64    `json:"position"`
	Time      time.Time `json:"time"`
	Body      any       `json:"body"`
}

type jsonAgg struct {
	Installation InstallationID `json:"installation"`
	Type         AggregateType  `json:"type"`
	ID           string         `json:"id"`
}

func marshalEventJSON(e Event, reveal bool) ([]byte, error) {
	if e.Body == nil {
		return nil, errors.New("events: marshal JSON: event has no body")
	}
	body := reflect.ValueOf(e.Body)
	if body.Kind() == reflect.Pointer && body.IsNil() {
		return nil, errors.New("events: marshal JSON: event body is nil")
	}
	return json.Marshal(jsonEvent{
		Kind:      e.Body.Kind(),
		Version:   e.Body.SchemaVersion(),
		Aggregate: jsonAgg{e.Aggregate.Installation, e.Aggregate.Type, e.Aggregate.ID},
		Position:  e.Position,
		Time:      e.Time,
		Body:      jsonValue(body, reveal),
	})
}

var secretType = reflect.TypeFor[Secret]()

// jsonValue converts a body value into JSON-ready values, naming struct
// fields by their msgpack tags and redacting or revealing Secrets.
func jsonValue(v reflect.Value, reveal bool) any {
	switch {
	case v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface:
		if v.IsNil() {
			return nil
		}
		return jsonValue(v.Elem(), reveal)
	case v.Type() == secretType:
		s := v.Interface().(Secret)
		if reveal {
			return s.Bytes()
		}
		return s // its MarshalJSON redacts
	case v.Type() == timeType:
		return v.Interface()
	case v.Kind() == reflect.Struct:
		m := make(map[string]any, v.NumField())
		for i := 0; i < v.NumField(); i++ {
			f := v.Type().Field(i)
			if !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("msgpack"), ",")
			if name == "" {
				name = f.Name
			}
			m[name] = jsonValue(v.Field(i), reveal)
		}
		return m
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Uint8:
		return v.Bytes()
	case v.Kind() == reflect.Slice || v.Kind() == reflect.Array:
		if v.Kind() == reflect.Slice && v.IsNil() {
			return nil
		}
		out := make([]any, v.Len())
		for i := range out {
			out[i] = jsonValue(v.Index(i), reveal)
		}
		return out
	default:
		return v.Interface()
	}
}
