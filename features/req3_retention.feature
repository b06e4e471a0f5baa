@pci-req-3
Feature: PCI DSS 3.2.1 — account data is kept no longer than needed
  Idempotency records hold copies of API requests and responses so that a retried request is
  answered without moving money twice. They are kept for 24 hours and then purged by the
  retention job that every paymentd node runs.

  @pci-3.2.1 @needs-db
  Scenario: Idempotency records past their retention period are purged
    Given a merchant with a secret key
    And the merchant tokenizes the card "4242424242424242" with CVC "739"
    When the merchant charges 1500 USD to the card with idempotency key "pcicheck-retention-1"
    And the merchant retries that request with idempotency key "pcicheck-retention-1"
    Then the retry is answered from the idempotency store with the same payment
    When the merchant sends a different request with idempotency key "pcicheck-retention-1"
    Then the different request is rejected as a reuse of the key
    When the data retention job runs 25 hours later
    Then the stored idempotency record for key "pcicheck-retention-1" has been deleted
    When the merchant sends a different request with idempotency key "pcicheck-retention-1"
    Then the key is no longer remembered: a different request with it is not refused as a reuse
