/** The connect scenarios (connect-scenarios.ts) in a full tunnel: 0.0.0.0/0 is protected, gateways carry everything. */
import { connectScenarios } from "./connect-scenarios.ts";

connectScenarios("full", "connf");
