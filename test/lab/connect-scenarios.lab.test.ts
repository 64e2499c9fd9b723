/** The connect scenarios (connect-scenarios.ts) in a split tunnel: only corp's network is protected. */
import { connectScenarios } from "./connect-scenarios.ts";

connectScenarios("split", "conn");
