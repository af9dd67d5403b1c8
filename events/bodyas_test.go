package events

import "testing"

func TestBodyAs(t *testing.T) {
	v := DeliveryExpired{Recipient: "r", Channel: "c", Sequence: 3}
	for _, e := range []Event{{Body: v}, {Body: &v}} {
		if got, ok := BodyAs[DeliveryExpired](e); !ok || got != v {
			t.Fatalf("BodyAs(%T) = %+v, %v", e.Body, got, ok)
		}
	}
	if _, ok := BodyAs[DeliveryAcknowledged](Event{Body: v}); ok {
		t.Fatal("BodyAs took one kind for another")
	}
	if _, ok := BodyAs[DeliveryExpired](Event{Body: (*DeliveryExpired)(nil)}); ok {
		t.Fatal("BodyAs took a nil pointer")
	}
}
