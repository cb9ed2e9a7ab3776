"""The pure core: settings, AdmissionReview handling and the Pod mutation. No I/O here."""
