@pci-req-10
Feature: PCI DSS 10.2 and 10.3 — audit logs record security events and resist tampering
  Security-relevant actions are written to an append-only audit log: JSON lines chained by
  SHA-256 hashes, with checkpoints signed by the HSM. The steps read the file the node writes
  (`audit.file`) and verify it with the verifier of `paymentd audit verify`.

  @pci-10.2.1 @pci-10.2.2 @needs-audit-log
  Scenario: Access to card data is recorded in the audit log
    Given a merchant with a secret key
    And the merchant tokenizes the card "4242424242424242" with CVC "739"
    When the merchant charges 1000 USD to the card
    Then the audit log has an entry for "detokenize" with actor, action, time, outcome, origin and object

  @pci-10.2.1 @pci-10.2.2 @needs-audit-log
  Scenario: Failed authentications are recorded in the audit log
    Given a merchant with a secret key
    When a client calls the API with the wrong secret key "sk_test_pcicheckWrongKey1234567890abcd"
    Then the audit log has a failed "api.auth" entry with actor, action, time, outcome, origin and object

  @pci-10.3.2 @needs-audit-log
  Scenario: Tampering with the audit log is detected
    Given a merchant with a secret key
    And the merchant tokenizes the card "4242424242424242" with CVC "739"
    When the merchant charges 1000 USD to the card
    And an entry of the audit log is altered in its file
    Then verifying the audit log reports the altered entry
